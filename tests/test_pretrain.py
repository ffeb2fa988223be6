"""`pretrain` builds the embedded model's format: deterministic, loadable, with the R1 tokens."""

from __future__ import annotations

import json

import pytest
import torch

from r1kit.chat import MARKUP_TOKENS, SPECIAL_TOKENS, r1zero_prompt, template_of
from r1kit.pretrain.train import PretrainConfig, pretrain


@pytest.fixture(scope="module", autouse=True)
def restore_torch_globals():
    """pretrain() sets the thread count and deterministic algorithms process-wide."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def _run(out, seed):
    cfg = PretrainConfig(
        out=str(out), seed=seed, steps=2, tokenizer_docs=2000, batch_size=2, block_len=64
    )
    return pretrain(cfg, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    summaries = {name: _run(root / name, seed) for name, seed in [("a", 0), ("b", 0), ("c", 1)]}
    return root, summaries


def test_same_seed_is_byte_identical(runs):
    root, summaries = runs
    a, b = (root / n / "model.safetensors" for n in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert (root / "a" / "tokenizer.json").read_bytes() == (
        root / "b" / "tokenizer.json"
    ).read_bytes()
    assert summaries["a"]["final_loss"] == summaries["b"]["final_loss"]


def test_other_seed_differs(runs):
    root, _ = runs
    a, c = (root / n / "model.safetensors" for n in "ac")
    assert a.read_bytes() != c.read_bytes()


def test_saved_dir_loads_with_transformers(runs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, summaries = runs
    out = root / "a"
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2"
    assert summaries["a"]["params"] == sum(p.numel() for p in model.parameters())
    ids = tok("Compute 2 + 3. <think> 5 </think> <answer> 5 </answer>", return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids.input_ids).loss
    assert torch.isfinite(loss)
    s = json.loads((out / "pretrain.json").read_text())
    assert s["config"]["steps"] == 2 and s["tokens"] == 2 * 2 * 64
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)


def test_tokenizer_has_r1_tokens(runs):
    from transformers import AutoConfig, AutoTokenizer

    root, _ = runs
    tok = AutoTokenizer.from_pretrained(root / "a")
    vocab = AutoConfig.from_pretrained(root / "a").vocab_size
    ids = set()
    for t in SPECIAL_TOKENS + MARKUP_TOKENS:
        enc = tok(t, add_special_tokens=False).input_ids
        assert len(enc) == 1, (t, enc)
        assert enc[0] == tok.convert_tokens_to_ids(t) < vocab
        ids.add(enc[0])
    assert len(ids) == len(SPECIAL_TOKENS + MARKUP_TOKENS)
    # control tokens vanish from decoded text, the think/answer markup stays
    text = tok.decode(
        tok("<think> 5 </think> <answer> 5 </answer>").input_ids, skip_special_tokens=True
    )
    assert all(m in text for m in MARKUP_TOKENS)
    assert tok.bos_token in SPECIAL_TOKENS and tok.eos_token in SPECIAL_TOKENS
    assert tok.pad_token in SPECIAL_TOKENS
    # the pretrained base carries the format of its corpus: R1-Zero's prompt
    assert template_of(tok) == "r1zero"
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "2 + 2?"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == tok.bos_token + r1zero_prompt("2 + 2?")


def test_student_preset_is_smaller_than_the_embedded_model():
    """`tiny-student`: the distillation student, same tokenizer recipe and depth, narrower."""
    from r1kit.pretrain.train import PRESETS

    tiny, student = PRESETS["tiny"], PRESETS["tiny-student"]
    assert student.layers == tiny.layers and student.hidden_size < tiny.hidden_size
    assert student.intermediate_size < tiny.intermediate_size and student.steps < tiny.steps
    same = ("seed", "vocab_size", "tokenizer_docs", "block_len", "batch_size")
    assert all(getattr(student, f) == getattr(tiny, f) for f in same)
