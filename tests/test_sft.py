"""`r1kit sft`: assistant-only loss, packing, schedule, checkpoints and resume, chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from numerics import decoder_terms, diff_tol
from safetensors.torch import load_file

from r1kit.cli import main
from r1kit.config import SFTConfig
from r1kit.sft.data import Conversation, encode, load_conversations
from r1kit.sft.train import collate, lr_at, run_sft, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _chat_file(path: Path, n: int = 24) -> Path:
    rows = []
    for c in load_conversations("traces:arith", limit=n, seed=3):
        rows.append({"messages": c.messages})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loss_only_on_assistant_tokens(tiny_tokenizer):
    conv = Conversation(
        [
            {"role": "user", "content": "Compute 2 + 3."},
            {"role": "assistant", "content": "<think> 2 + 3 = 5. </think> <answer> 5 </answer>"},
        ],
        "x",
    )
    e = encode(conv, tiny_tokenizer, "r1zero")
    prompt = tiny_tokenizer.decode(e.prompt_ids)
    assert prompt.rstrip().endswith("<think>") and "Compute 2 + 3." in prompt
    completion = tiny_tokenizer.decode(e.completion_ids[:-1])
    assert completion.strip().startswith("2 + 3 = 5.") and "<think>" not in completion
    assert e.completion_ids[-1] == tiny_tokenizer.eos_token_id
    b = collate([e], tiny_tokenizer.pad_token_id)
    P, C = len(e.prompt_ids), len(e.completion_ids)
    assert b.completion_mask.sum() == C  # exactly the assistant tokens carry loss
    assert b.completion_mask[0, : P - 1].sum() == 0
    # the chat template: the generation prompt opens the think block, the completion closes it
    ce = encode(conv, tiny_tokenizer, "chat")
    cp = tiny_tokenizer.decode(ce.prompt_ids)
    assert cp.endswith("<｜Assistant｜><think>\n") and "<｜User｜>Compute 2 + 3." in cp
    assert tiny_tokenizer.decode(ce.completion_ids).startswith("2 + 3 = 5.")


def test_packed_loss_equals_padded(tiny_model, tiny_tokenizer):
    data = [encode(c, tiny_tokenizer, "r1zero") for c in load_conversations("traces:mix", limit=8)]
    losses = []
    for pack in (0, 256):
        model = type(tiny_model)(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        loss, n_tok, _ = train_step(
            model,
            opt,
            data,
            SFTConfig.of(pack_tokens=pack, micro_batch=3).optim,
            tiny_tokenizer.pad_token_id,
            0.0,
        )
        losses.append(loss)
    assert n_tok == sum(len(e.completion_ids) for e in data)
    # the token mean of -log-probs (all of one sign): float32 sums in another order
    T = max(len(e.prompt_ids) + len(e.completion_ids) for e in data)
    terms = decoder_terms(tiny_model.config, T) + n_tok
    assert abs(losses[1] - losses[0]) <= diff_tol(torch.float32, losses[0], terms)


def test_schedule_warmup_then_cosine():
    cfg = SFTConfig.of(lr=1.0, warmup_ratio=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg.optim) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] > 0.1 - 1e-9


def test_sft_trains_and_resumes_to_the_same_weights(tmp_path):
    data = _chat_file(tmp_path / "chat.jsonl")
    kw = dict(
        data=str(data),
        batch_size=8,
        micro_batch=4,
        epochs=2,
        lr=5e-4,
        save_every=2,
        eval_problems=0,
    )
    full = run_sft(SFTConfig.of(out=str(tmp_path / "a"), **kw), progress=False)
    assert full["steps"] == 6 and full["final_loss"] < full["first_loss"]
    # interrupted after step 2: the step-2 checkpoint is the newest one on disk
    b = tmp_path / "b"
    run_sft(SFTConfig.of(out=str(b), **kw), progress=False)
    for d in ("step-000004", "step-000006"):
        shutil.rmtree(b / "checkpoints" / d)
    shutil.rmtree(b / "final")
    (b / "checkpoints" / "latest").write_text("step-000002")
    assert main(["sft", "--resume", str(b), "--quiet"]) == 0
    wa = load_file(tmp_path / "a" / "final" / "model.safetensors")
    wb = load_file(b / "final" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_sft_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main(["sft", "--data", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:1" in err and "assistant" in err
    assert main(["sft", "--data", str(tmp_path / "none.jsonl"), "--quiet"]) == 2
    assert main(["sft", "--lr", "0", "--quiet"]) == 2
