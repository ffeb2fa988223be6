"""LoRA: the engine samples from the merged adapters and follows them after sync; a LoRA zero
run trains only adapters, checkpoints a plain merged model, and resumes from the adapters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("peft")

from r1kit.engine import SamplingParams, make_engine  # noqa: E402
from r1kit.train.lora import add_lora, is_lora, merged  # noqa: E402

PROMPTS = [[1, 5, 9, 30, 40, 50, 22], [1, 70, 80, 90]]


def _hf_greedy(model, n=12):
    out = []
    for p in PROMPTS:
        ids = torch.tensor([p])
        g = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
        out.append(g[0, len(p) :].tolist())
    return out


def _is_greedy_under(model, outs) -> bool:
    """Each token is the model's argmax given the ones before (teacher-forced forward), up to
    float noise: exact token equality would flip on a near-tie between two summation orders."""
    for p, toks in zip(PROMPTS, outs):
        ids = torch.tensor([p + toks])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(p) - 1 : -1]
        chosen = logits.gather(1, torch.tensor(toks)[:, None])[:, 0]
        if not bool((chosen >= logits.max(-1).values - 1e-4).all()):
            return False
    return True


def _randomize_b(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_engine_follows_lora_adapters(tiny_model):
    model = add_lora(tiny_model.eval(), rank=4)
    assert is_lora(model)
    _randomize_b(model, 0)
    eng = make_engine(model, 0, kind="paged")
    greedy = SamplingParams(temperature=0, max_tokens=12)
    first = [o.samples[0].token_ids for o in eng.generate(PROMPTS, greedy)]
    assert _is_greedy_under(model, first)
    _randomize_b(model, 1)  # a training step changes B: stale until sync
    assert [o.samples[0].token_ids for o in eng.generate(PROMPTS, greedy)] == first
    assert eng.sync_weights() > 0
    now = [o.samples[0].token_ids for o in eng.generate(PROMPTS, greedy)]
    assert _is_greedy_under(model, now) and now != first
    assert not _is_greedy_under(model, first)  # the old output is no longer the model's
    plain = merged(model)
    assert not is_lora(plain) and _is_greedy_under(plain, now)
    assert is_lora(model)  # merging made a copy


def test_lora_zero_run_and_resume(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "r1kit.cli", "zero", "--quiet", "--dataset", "arith"]
    flags = ["--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--eval-problems"]
    flags += ["2", "--eval-k", "1", "--max-new-tokens", "16", "--lora-rank", "4", "--save-every"]
    flags += ["1", "--lr", "1e-3"]
    p = subprocess.run([*base, "--out", str(out), *flags], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    state = torch.load(out / "checkpoints/step-000002/trainer_state.pt", weights_only=False)
    assert state["lora"] and all("lora_" in k for k in state["lora"])
    # the checkpoint and final/ are plain merged models, readable without peft
    from r1kit.modeling import load_model

    final = load_model(str(out / "final"))
    assert not is_lora(final)
    base_model = load_model(None)
    diff = [
        (a - b).abs().max().item()
        for a, b in zip(final.state_dict().values(), base_model.state_dict().values())
    ]
    assert max(diff) > 0  # the adapters changed the merged weights
    # resume from step 1: same adapters after step 2 as the straight run
    (out / "checkpoints/latest").write_text("step-000001")
    straight = state["lora"]
    p = subprocess.run([*base, "--resume", str(out), "--quiet"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    again = torch.load(out / "checkpoints/step-000002/trainer_state.pt", weights_only=False)
    for k, v in straight.items():  # the same operations in the same order: bitwise
        assert torch.equal(again["lora"][k], v), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lora"]["rank"] == 4
