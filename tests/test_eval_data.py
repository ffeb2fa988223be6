"""Benchmarks and datasets: `--gold` on the shared copies of MATH-500, AIME 2024 and GSM8K, field
mapping for any JSONL, and one clear error for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.eval.benchmarks import get_benchmark, gold_of, load_problems

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not here")


def _eval(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["eval", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@needs_data
@pytest.mark.parametrize(
    "bench, file, least",
    [
        ("math500", "math500.jsonl", 0.99),
        ("aime24", "aime24.jsonl", 1.0),
        ("gsm8k", "gsm8k_test.jsonl", 1.0),
    ],
)
def test_gold_scores_the_references(bench, file, least, tmp_path, capsys):
    """The verifier and the data agree: MATH-500's reference solutions (their last boxed answer
    graded against the answer field), AIME's and GSM8K's reference answers."""
    out = tmp_path / bench
    rc, stdout, _ = _eval(
        ["--gold", "--benchmark", bench, "--data", str(DATA / file), "--out", str(out)], capsys
    )
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    n = {"math500": 500, "aime24": 30, "gsm8k": 1319}[bench]
    assert s["n_problems"] == n and s["k"] == 1 and s["backend"] == "gold"
    assert s["pass@1"] >= least, s["wrong"]
    assert "reference answers graded correct" in stdout
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == n
    for key in ("problem_id", "prompt", "reasoning", "answer", "parsed", "correct", "tokens"):
        assert key in rows[0]


@needs_data
def test_gold_answers_per_benchmark():
    aime = load_problems(get_benchmark("aime24"), str(DATA / "aime24.jsonl"), limit=8)
    assert aime[0]["id"] == "60" and aime[7]["gold"] == "025"
    assert aime[7]["reference"] == "\\boxed{025}"
    gsm = load_problems(get_benchmark("gsm8k"), str(DATA / "gsm8k_test.jsonl"), limit=1)[0]
    assert gsm["gold"] == "18" and gsm["reference"].endswith("\\boxed{18}")
    m = load_problems(get_benchmark("math500"), str(DATA / "math500.jsonl"), limit=1)[0]
    assert m["id"] == "test/precalculus/807.json" and "\\boxed" in m["reference"]


def test_gold_of():
    assert gold_of("so 2 + 3 = 5\n#### 5") == "5"
    assert gold_of("#### 1,000") == "1,000"
    assert gold_of("the answer is \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert gold_of(" 42 ") == "42"


def test_field_mapping_and_solution_only_rows(tmp_path):
    f = tmp_path / "mine.jsonl"
    rows = [
        {"q": "What is 2+2?", "final": 4, "key": "a"},
        {"q": "What is 3+3?", "work": "3+3 = \\boxed{6}", "key": "b"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = get_benchmark(None, str(f), "q", "final", "work")
    assert b.name == "mine"
    p = load_problems(b, str(f))
    assert [x["gold"] for x in p] == ["4", "6"]  # the second from its solution's box
    assert p[0]["reference"] == "\\boxed{4}" and p[1]["reference"] == "3+3 = \\boxed{6}"
    assert [x["id"] for x in p] == ["0", "1"]  # no id field: row numbers


def test_unknown_benchmark(capsys):
    rc, _, err = _eval(["--gold", "--benchmark", "math5000"], capsys)
    assert rc == 2
    assert err.strip().splitlines() == [
        "r1kit: error: unknown benchmark 'math5000'; built in: math500, aime24, aime25, amc23, "
        "gsm8k (or pass --data FILE.jsonl)"
    ]


def test_jsonl_without_the_mapped_fields(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "result": "4"}\n')
    rc, _, err = _eval(["--gold", "--data", str(f), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{f}:2: no answer field 'answer' (fields: question, result)" in err
    assert "--answer-field" in err
    rc, _, err = _eval(["--gold", "--data", str(f), "--question-field", "prompt"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    # a named field that no row has: the fields the file has (not a row's)
    assert (
        f"--question-field 'prompt': no such field in {f} (its fields: question, answer, result)"
        in err
    )
    rc, _, err = _eval(["--gold", "--data", str(tmp_path / "missing.jsonl")], capsys)
    assert rc == 2 and "data file not found" in err


def test_hub_offline_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    rc, _, err = _eval(["--gold", "--benchmark", "aime25", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "cannot load math-ai/aime25 from the Hugging Face hub" in err
    assert "--data FILE.jsonl" in err


def test_hub_path_through_datasets(tmp_path):
    """The hub loader (`datasets.load_dataset`), pointed at a local dataset folder."""
    from dataclasses import replace

    from r1kit.eval.benchmarks import BENCHMARKS

    d = tmp_path / "gsm8k_copy"
    d.mkdir()
    rows = [
        {"question": "1+1?", "answer": "1+1=2\n#### 2"},
        {"question": "2*3?", "answer": "#### 6"},
    ]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = replace(BENCHMARKS["gsm8k"], hub_id=str(d), config=None)
    p = load_problems(b)
    assert [(x["id"], x["question"], x["gold"]) for x in p] == [
        ("0", "1+1?", "2"),
        ("1", "2*3?", "6"),
    ]
