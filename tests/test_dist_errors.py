"""An `r1kit` error under torchrun is said once per job, not once per rank, and every rank that
hits it exits with its code (dist.report_once, cli.main); real 2-rank gloo jobs on CPU."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import launch
from launch import ROOT


def torchrun(*args: str | Path) -> subprocess.CompletedProcess:
    """A 2-rank job from the checkout's root, run to its end whatever its exit code."""
    return launch.torchrun(2, *args, ok=None, cwd=ROOT)


def error_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("r1kit:")]


def test_an_error_every_rank_hits_is_said_once_and_every_rank_exits_2(tmp_path):
    """A dataset path that does not exist: found by both ranks after the process group formed."""
    missing = tmp_path / "missing.jsonl"
    zero = ["-m", "r1kit.cli", "zero", "--steps", "2", "--device", "cpu", "--quiet"]
    p = torchrun(*zero, "--out", tmp_path / "run", "--dataset", missing)
    assert error_lines(p) == [f"r1kit: error: dataset file not found: {missing}"], p.stderr[-3000:]
    # torchrun's failure table: each rank's exit code (none killed by torchrun's SIGTERM)
    codes = re.findall(r"^\s*exitcode\s*:\s*(-?\d+)", p.stderr, re.M)
    assert p.returncode != 0 and sorted(codes) == ["2", "2"], p.stderr[-3000:]


def test_an_error_one_rank_hits_alone_is_still_said(tmp_path):
    """Rank 1's environment alone is bad: rank 1 says so (once), rank 0 says nothing."""
    worker = ROOT / "tests" / "dist_error_worker.py"
    p = torchrun(worker, "1", "zero", "--steps", "2", "--device", "cpu", "--out", tmp_path / "r")
    expected = "r1kit: error: R1KIT_SHARE_GPUS='maybe': expected 1 or 0"
    assert error_lines(p) == [expected], p.stderr[-3000:]
    assert p.returncode != 0 and re.search(r"rank\s*:\s*1 .*\n\s*exitcode\s*:\s*2 ", p.stderr)


def test_a_usage_error_is_said_once(tmp_path):
    """A flag argparse refuses (a typo, a value of the wrong type): its usage and line once."""
    zero = ["-m", "r1kit.cli", "zero", "--device", "cpu", "--out", tmp_path / "run"]
    p = torchrun(*zero, "--stepz", "2")
    assert error_lines(p) == ["r1kit: error: unrecognized arguments: --stepz 2"], p.stderr[-3000:]
    assert p.stderr.count("usage: r1kit") == 1, p.stderr[-3000:]
    codes = re.findall(r"^\s*exitcode\s*:\s*(-?\d+)", p.stderr, re.M)  # each rank's
    assert p.returncode != 0 and sorted(codes) == ["2", "2"], p.stderr[-3000:]
