"""`r1kit eval` end to end on the embedded model: files, metrics consistent with the samples,
resume, data-parallel workers, bad flags."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.config import EvalConfig
from r1kit.eval.local import LocalBackend
from r1kit.eval.run import run_eval
from r1kit.sampling.metrics import cons_at_k

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K = DATA / "gsm8k_test.jsonl"


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's ops are too small to gain from threads, and a busy machine makes two
    OpenMP threads wait on each other at every op."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def arith(tmp_path_factory) -> Path:
    """Held-out arithmetic the tiny model sometimes gets right (R1-Zero format)."""
    from r1kit.data.tasks import TASKS, stream

    f = tmp_path_factory.mktemp("data") / "arith.jsonl"
    rows = itertools.islice(stream(TASKS["arith"], "test", 1, unique=True), 4)
    f.write_text(
        "".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows)
    )
    return f


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_eval_embedded_model_end_to_end(arith, tmp_path, capsys):
    out = tmp_path / "arith"
    args = ["eval", "--data", str(arith), "--template", "r1zero", "--k", "4"]
    assert main([*args, "--max-tokens", "48", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "r1kit-tiny on arith" in printed and "pass@4" in printed and "cons@4" in printed
    s = json.loads((out / "summary.json").read_text())
    assert (s["k"], s["n_problems"], s["n_samples"], s["generated"]) == (4, 4, 16, 16)
    assert s["model"] == "r1kit-tiny" and s["backend"] == "local" and s["seed"] == 0
    rows = _rows(out)
    assert len(rows) == 16 and all(r["tokens"] <= 48 for r in rows)
    for key in ("problem_id", "prompt", "reasoning", "answer", "parsed", "correct", "tokens"):
        assert key in rows[0]
    assert rows[0]["prompt"].startswith("A conversation between User and Assistant")
    # the summary is what the samples say: pass@1, unbiased pass@k, cons@k
    by_problem = [rows[i : i + 4] for i in range(0, 16, 4)]
    c = [sum(r["correct"] for r in p) for p in by_problem]
    assert s["pass@1"] == pytest.approx(sum(c) / 16)
    assert s["pass@k"] == pytest.approx(
        sum(1 - math.comb(4 - x, 4) / math.comb(4, 4) for x in c) / 4
    )
    votes = [[(r["vote_key"], r["correct"]) for r in p] for p in by_problem]
    assert s["cons@k"] == pytest.approx(cons_at_k(votes))
    assert s["tokens"] == sum(r["tokens"] for r in rows)


@pytest.mark.skipif(not GSM8K.exists(), reason="../shared/data is not here")
def test_resume_generates_only_missing_samples(tmp_path, capsys):
    out = tmp_path / "gsm8k"
    base = ["eval", "--benchmark", "gsm8k", "--data", str(GSM8K), "--k", "2"]
    base += ["--max-tokens", "16", "--out", str(out), "--quiet"]
    assert main([*base, "--limit", "2"]) == 0
    first = _rows(out)
    assert len(first) == 4 and all(r["prompt"].endswith("Assistant: <think>") for r in first)
    assert main([*base, "--limit", "3", "--k", "3"]) == 0
    assert "pass@1=" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert (s["generated"], s["resumed"], s["n_samples"]) == (5, 4, 9)  # 2 problems +1, 1 new x3
    again = {(r["problem_id"], r["sample"]): r for r in _rows(out)}
    assert all(again[(r["problem_id"], r["sample"])] == r for r in first)  # not regenerated
    assert main([*base, "--limit", "3", "--k", "3"]) == 0  # all done: nothing to generate
    assert json.loads((out / "summary.json").read_text())["generated"] == 0
    # a different sampling setup in the same directory is refused, in one line
    assert main([*base, "--limit", "3", "--temperature", "1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "temperature=0.6, not 1.0" in err[0]


def test_data_parallel_workers(arith, tmp_path):
    """Two engine processes (CPU stands in for two GPUs) share the chunks of requests."""
    cfg = EvalConfig.of(data=str(arith), k=2, max_tokens=24, template="r1zero", out=str(tmp_path))
    backend = LocalBackend(None, template="r1zero", devices=["cpu", "cpu"], chunk_samples=2)
    s = run_eval(cfg, progress=False, backend=backend)
    assert (s["n_samples"], s["generated"]) == (8, 8)
    rows = _rows(tmp_path)
    assert sorted((r["problem_id"], r["sample"]) for r in rows) == [
        (str(p), j) for p in range(4) for j in range(2)
    ]
    assert all(r["finish_reason"] in ("stop", "length") and r["tokens"] <= 24 for r in rows)


def test_bad_local_flags(arith, tmp_path, capsys):
    args = ["eval", "--data", str(arith), "--out", str(tmp_path), "--max-tokens", "4"]
    assert main([*args, "--engine", "warp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["r1kit: error: --engine must be auto, paged or hf"]
    assert main([*args, "--model", "foo"]) == 2
    assert "--model names an endpoint's model" in capsys.readouterr().err
    assert main([*args, "--k", "0"]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err
