"""Crash safety: `kill -9` in the middle of a run, then `--resume`, ends with the same weights
and metrics as a run that was never interrupted (same data order, RNG and optimizer state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

FLAGS = [
    "--quiet",
    "--dataset",
    "arith",
    "--steps",
    "5",
    "--prompts-per-step",
    "2",
    "--group-size",
    "4",
    "--eval-problems",
    "2",
    "--eval-k",
    "1",
    "--max-new-tokens",
    "16",
    "--save-every",
    "1",
    "--lr",
    "1e-3",
]
CMD = [sys.executable, "-m", "r1kit.cli", "zero"]


def test_kill_9_mid_run_then_resume_matches_straight_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    p = subprocess.run([*CMD, "--out", str(straight), *FLAGS], env=env, capture_output=True)
    assert p.returncode == 0, p.stderr[-2000:]

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen([*CMD, "--out", str(crashed), *FLAGS], env=env)
    deadline = time.time() + 300
    while not (crashed / "checkpoints" / "step-000002").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid step 3: no chance to clean up
    proc.wait()
    assert not (crashed / "final").exists()
    p = subprocess.run([*CMD, "--resume", str(crashed), "--quiet"], env=env, capture_output=True)
    assert p.returncode == 0, p.stderr[-2000:]

    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(crashed / "final" / "model.safetensors")
    for k in a:  # the same operations in the same order, killed and resumed or not: bitwise
        assert torch.equal(a[k], b[k]), k
    rows_a = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["reward"] == rb["reward"] and ra["response_len"] == rb["response_len"]
