"""`r1kit export check` over llama.cpp: a GGUF row samples through `LlamaCppEngine`, which must
keep the engine contract (prompt ids in, stop at EOS, max_tokens, n samples, seeded) so that a
row differs from the original's only by the weights. At temperature 0 an f32 GGUF (the same
weights) must give the paged engine's tokens, sample for sample."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")  # the `gguf` extra (compiles llama.cpp)

from r1kit.cli import main  # noqa: E402
from r1kit.engine import SamplingParams, make_engine  # noqa: E402
from r1kit.export.check import LlamaCppEngine, check_formats, parse_formats  # noqa: E402
from r1kit.export.gguf import export_gguf  # noqa: E402
from r1kit.sampling.rollout import prompt  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTIONS = ["What is 12 + 7?", "Compute 3 * 14.", "What is 100 - 37?"]


def test_llamacpp_engine_keeps_the_engine_contract(tmp_path, tiny_model, tiny_tokenizer):
    path = export_gguf(None, "f32", tmp_path / "m.gguf").path
    ids = [prompt(tiny_tokenizer, q, "r1zero")[1] for q in QUESTIONS]
    eos = tiny_tokenizer.eos_token_id
    greedy = SamplingParams(n=2, temperature=0, max_tokens=40, stop_token_ids=(eos,), seed=1)
    llama = LlamaCppEngine(path, n_ctx=1024, threads=1)
    got = llama.generate(ids, greedy)
    want = make_engine(tiny_model.eval()).generate(ids, greedy)
    for g, w, p in zip(got, want, ids):
        assert g.prompt_ids == p and len(g.samples) == 2
        for s, t in zip(g.samples, w.samples):
            assert s.token_ids == t.token_ids  # same weights, greedy: the same tokens
            assert s.finish_reason == t.finish_reason
            assert s.finish_reason == "length" or s.token_ids[-1] == eos
    # sampled: r1kit's sampler over llama.cpp's logits draws the paged engine's random numbers
    # (Gumbel noise hashed from row seed, step and token), so f32 weights give its samples
    warm = SamplingParams(n=2, temperature=0.6, top_p=0.95, max_tokens=40, seed=3)
    got = llama.generate(ids, warm)
    want = make_engine(tiny_model.eval()).generate(ids, warm)
    for g, w in zip(got, want):
        assert [s.token_ids for s in g.samples] == [s.token_ids for s in w.samples]
    # the same seed draws the same samples again, and the samples of a prompt differ
    hot = SamplingParams(n=3, temperature=1.0, top_p=1.0, max_tokens=24, seed=7)
    a, b = llama.generate(ids[:1], hot), llama.generate(ids[:1], hot)
    assert [s.token_ids for s in a[0].samples] == [s.token_ids for s in b[0].samples]
    assert len({tuple(s.token_ids) for s in a[0].samples}) > 1
    assert all(len(s.token_ids) <= 24 for s in a[0].samples)
    llama.close()


def test_check_rows_for_gguf(tmp_path, capsys):
    rows, setup = check_formats(None, ["hf", "q8_0"], problems=4, k=2, max_tokens=32)
    assert [(r.format, r.engine) for r in rows] == [("hf", "PagedEngine"), ("q8_0", "llama.cpp")]
    assert rows[1].size_bytes < rows[0].size_bytes / 3  # 8.5 bits a weight against 32
    assert setup["k"] == 2 and all(0 <= r.pass1 <= 1 for r in rows)
    args = ["export", "gguf", "--outtype", "q4_0", "--out", str(tmp_path), "--check"]
    args += ["--problems", "3", "--k", "1", "--max-tokens", "16"]
    assert main([*args, "--check-out", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "held-out pass@1: 3 problems" in out and "q4_0     llama.cpp" in out
    assert (tmp_path / "rows.json").exists()


def test_bad_formats_are_one_line(capsys):
    assert parse_formats("all") == ["hf", "gptq-8", "gptq-4", "f32", "f16", "q8_0", "q4_0"]
    assert main(["export", "check", "--formats", "hf,q5_k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown q5_k" in err


def test_llamacpp_samples_the_tempered_distribution(tmp_path, tiny_model, tiny_tokenizer):
    """Temperature before top-p, as r1kit's engine: one-token samples at T=0.6 follow
    softmax(logits / 0.6) cut at top-p 0.95."""
    import torch

    path = export_gguf(None, "f32", tmp_path / "m.gguf").path
    ids = prompt(tiny_tokenizer, "What is 37 + 48?", "r1zero")[1]
    n = 500
    sp = SamplingParams(n=n, temperature=0.6, top_p=0.95, max_tokens=1, seed=3)
    out = LlamaCppEngine(path, n_ctx=1024, threads=1).generate([ids], sp)[0]
    with torch.no_grad():
        p = torch.softmax(tiny_model(torch.tensor([ids])).logits[0, -1] / 0.6, -1)
    probs, order = p.sort(descending=True)
    keep = int((probs.cumsum(0) < 0.95).sum()) + 1  # the nucleus
    want = probs[:keep] / probs[:keep].sum()
    got = [sum(s.token_ids[0] == int(t) for s in out.samples) for t in order[:keep]]
    assert sum(got) == n  # nothing outside the nucleus
    for g, w in zip(got, want.tolist()):
        sd = (n * w * (1 - w)) ** 0.5
        assert abs(g - n * w) <= 4 * sd + 1  # binomial count within 4 standard deviations
