"""`r1kit eval URL`: an OpenAI-compatible endpoint (a stub server started here) end to end,
retries on 429 / 5xx, a refused key, a dead endpoint, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_stub import StubServer

from r1kit.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
QUESTIONS = [
    ("What is 2 + 16?", "18"),
    ("What is 1 + 2?", "3"),
    ("What is 7 * 10000?", "70000"),
    ("What is 27 * 20?", "540"),
]


@pytest.fixture
def data(tmp_path) -> Path:
    f = tmp_path / "qa.jsonl"
    f.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    return f


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _eval(stub, data, out, *extra, key="sk-test"):
    args = ["eval", stub.url, "--data", str(data), "--out", str(out), "--api-key", key]
    return main([*args, "--quiet", *extra])


def test_endpoint_end_to_end(data, tmp_path, capsys):
    answers = {
        "What is 2 + 16?": ["18", "18", "18"],  # always right
        "What is 1 + 2?": ["3", "4", "3"],  # right by majority
        "What is 7 * 10000?": ["1", "2", "2"],  # never right
        "What is 27 * 20?": ["5", "540", "6"],  # three-way tie: sample 0 ("5") wins the vote
    }
    out = tmp_path / "run"
    with StubServer(answers) as stub:
        assert _eval(stub, data, out, "--k", "3", "--concurrency", "1") == 0
    assert "pass@1=0.5000 pass@k=0.7500 cons@k=0.5000 k=3" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "stub-r1" and s["backend"] == "remote" and s["n_samples"] == 12
    assert s["pass@1"] == pytest.approx(0.5) and s["pass@k"] == pytest.approx(0.75)
    assert s["cons@k"] == pytest.approx(0.5) and s["tokens"] == 12 * 12
    rows = _rows(out)
    assert rows[0]["reasoning"] == "Let me work it out. Wait, let me check: 18."
    assert rows[0]["answer"] == "The answer is $\\boxed{18}$." and rows[0]["parsed"] == "18"
    # the R1 protocol as sent: one user message, no system prompt, T=0.6, top-p 0.95, 32k
    body = stub.bodies[0]
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].endswith(
        "\nPlease reason step by step, and put your final answer within \\boxed{}."
    )
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.95, 32768)
    assert body["model"] == "stub-r1" and "seed" not in body


def test_retries_429_and_503_then_succeeds(data, tmp_path):
    with StubServer({}) as stub:
        stub.fail = [429, 503, 429]
        assert _eval(stub, data, tmp_path, "--k", "2", "--concurrency", "4", "--model", "m") == 0
    assert stub.statuses.count(200) == 8 and stub.statuses[:3] == [429, 503, 429]
    assert len(_rows(tmp_path)) == 8


def test_gives_up_after_retries(data, tmp_path, capsys):
    with StubServer({}) as stub:
        stub.fail = [429] * 50
        rc = _eval(stub, data, tmp_path, "--model", "m", "--retries", "2", "--concurrency", "1")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "still answers 429 (Rate limit reached) after 2 retries; lower --concurrency" in err[0]


def test_refused_key(data, tmp_path, capsys):
    with StubServer({}) as stub:
        assert _eval(stub, data, tmp_path, key="sk-wrong") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0] == (
        f"r1kit: error: {stub.url} refused the API key (401: Authentication Fails (invalid key)); "
        "pass --api-key or set OPENAI_API_KEY"
    )


def test_endpoint_down(data, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    rc = main(["eval", url, "--data", str(data), "--out", str(tmp_path), "--retries", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"r1kit: error: cannot reach {url}: the endpoint is down")


def test_key_revoked_half_way_then_resume(data, tmp_path, capsys):
    out = tmp_path / "run"
    with StubServer({}) as stub:
        stub.fail_after = 3
        assert _eval(stub, data, out, "--k", "2", "--concurrency", "1", "--model", "m") == 2
        assert "refused the API key" in capsys.readouterr().err
        assert len(_rows(out)) == 3  # what finished before the error is kept
        stub.fail_after = None
        assert _eval(stub, data, out, "--k", "2", "--concurrency", "1", "--model", "m") == 0
    assert stub.statuses.count(200) == 8  # 3 before, 5 after: nothing asked twice
    s = json.loads((out / "summary.json").read_text())
    assert (s["generated"], s["resumed"], s["n_samples"]) == (5, 3, 8)


def test_killed_eval_resumes(data, tmp_path):
    """SIGKILL half-way through (a torn last line included), then the same command again."""
    out = tmp_path / "run"
    with StubServer({q: a for q, a in QUESTIONS}) as stub:
        stub.delay_s = 0.3
        cmd = [sys.executable, "-m", "r1kit.cli", "eval", stub.url, "--data", str(data)]
        cmd += ["--out", str(out), "--k", "3", "--concurrency", "1", "--quiet", "--api-key"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([*cmd, "sk-test"], env=env, cwd=tmp_path)
        deadline = time.time() + 60
        while time.time() < deadline and stub.statuses.count(200) < 5:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with (out / "samples.jsonl").open("a") as f:
            f.write('{"problem_id": "2", "sam')  # as if killed in the middle of a write
        kept = len((out / "samples.jsonl").read_text().splitlines()) - 1
        assert 3 <= kept < 12
        served = stub.statuses.count(200)
        stub.delay_s = 0
        assert main([*cmd[3:], "sk-test"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["resumed"], s["generated"], s["n_samples"]) == (kept, 12 - kept, 12)
    assert stub.statuses.count(200) == served + 12 - kept
    assert s["pass@1"] == 1.0 and len(_rows(out)) == 12


@pytest.mark.skipif(not (DATA / "aime24.jsonl").exists(), reason="../shared/data is not here")
def test_table_beside_published_numbers(tmp_path, capsys):
    rows = [json.loads(line) for line in (DATA / "aime24.jsonl").read_text().splitlines()[:2]]
    answers = {r["problem"].strip(): [r["answer"], "1"] for r in rows}
    with StubServer(answers, model="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") as stub:
        args = ["eval", stub.url, "--benchmark", "aime24", "--data", str(DATA / "aime24.jsonl")]
        args += ["--limit", "2", "--k", "2", "--concurrency", "1", "--api-key", "sk-test"]
        assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "published: DeepSeek-R1-Distill-Qwen-1.5B" in out
    assert "28.9" in out and "52.7 (cons@64)" in out and "50.0 ± 0.0" in out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["published"] == {
        "model": "DeepSeek-R1-Distill-Qwen-1.5B",
        "pass@1": 28.9,
        "cons@64": 52.7,
    }


@pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl").exists(), reason="../shared/data is not here")
def test_same_benchmark_local_and_endpoint(tmp_path):
    """GSM8K through the embedded model and through an endpoint: the same files, fields, ids."""
    import torch

    gsm = DATA / "gsm8k_test.jsonl"
    golds = [json.loads(line) for line in gsm.read_text().splitlines()[:3]]
    answers = {r["question"].strip(): r["answer"].split("####")[-1].strip() for r in golds}
    args = ["eval", "--benchmark", "gsm8k", "--data", str(gsm), "--limit", "3", "--k", "2"]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--max-tokens", "8", "--out", str(tmp_path / "local"), "--quiet"]) == 0
    finally:
        torch.set_num_threads(n)
    with StubServer(answers) as stub:
        remote = [stub.url, "--api-key", "sk-test", "--out", str(tmp_path / "remote"), "--quiet"]
        assert main([*args, *remote]) == 0
    local, served = _rows(tmp_path / "local"), _rows(tmp_path / "remote")
    assert [(r["problem_id"], r["sample"]) for r in local] == [
        (r["problem_id"], r["sample"]) for r in served
    ]
    assert set(local[0]) == set(served[0])
    s_local = json.loads((tmp_path / "local" / "summary.json").read_text())
    s_remote = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert set(s_local) == set(s_remote) and s_remote["pass@1"] == 1.0
    assert (s_local["backend"], s_remote["backend"]) == ("local", "remote")
