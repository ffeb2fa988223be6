"""`r1kit eval` against r1kit's own server (issue 5's endpoint backend through issue 6's API):
the same benchmark files as a local run, with the reasoning captured from `reasoning_content`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_server import Server

from r1kit.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"


@pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not here")
def test_eval_through_r1kit_serve(tmp_path):
    server = Server()
    try:
        out = tmp_path / "served"
        args = ["eval", f"{server.url}/v1", "--api-key", server.key, "--benchmark", "gsm8k"]
        args += ["--data", str(DATA), "--limit", "3", "--k", "2", "--max-tokens", "48"]
        assert main([*args, "--seed", "0", "--out", str(out), "--quiet"]) == 0
    finally:
        server.close()
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["problem_id"], r["sample"]) for r in rows] == [
        (p, s) for p in ("0", "1", "2") for s in (0, 1)
    ]
    # the chat template opens <think>: the server returns the reasoning separately
    assert all(r["reasoning"] for r in rows)
    s = json.loads((out / "summary.json").read_text())
    assert s["backend"] == "remote" and s["n_problems"] == 3 and s["k"] == 2
    assert s["tokens"] > 0 and 0.0 <= s["pass@1"] <= 1.0
