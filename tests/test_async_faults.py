"""Faults of asynchronous GRPO (rl/async_loop.py), each on 2 or 3 gloo ranks through
`torchrun -m r1kit.cli zero --async-depth 1`: a checkpoint write that fails on the trainers (a
full disk: a small tmpfs under the run), and a generator that fails on its first batch (a
reward plugin's one-line error). Every rank must end with the same one line `r1kit: error: ...`
and exit 2, with no traceback and no hang, and the checkpoint saved before the failure must
stay the one --resume picks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from launch import torchrun

from r1kit.train.checkpoint import select_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
FLAGS = ["--dataset", "arith", "--prompts-per-step", "2", "--group-size", "4"]
FLAGS += ["--eval-problems", "1", "--eval-k", "1", "--max-new-tokens", "16", "--quiet"]
FLAGS += ["--device", "cpu", "--async-depth", "1"]


def _torchrun(args: list, pythonpath: str = "", n: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node n -m r1kit.cli zero ARGS` on gloo, run to its end."""
    zero = ["-m", "r1kit.cli", "zero", *args, *FLAGS]
    return torchrun(n, *zero, ok=None, pythonpath=pythonpath, timeout=180)


def _one_line_on_every_rank(p: subprocess.CompletedProcess, start: str, n: int = 2) -> str:
    """The one error line of the job (the CLI shows a line the ranks share once), with both
    ranks exiting 2 (torchrun lists each failed rank's exit code) and no worker traceback."""
    tail = p.stdout[-3000:] + p.stderr[-3000:]
    lines = {x for x in p.stderr.splitlines() if x.startswith("r1kit: ")}
    assert len(lines) == 1, tail
    (line,) = lines
    assert line.startswith(start), tail
    assert p.stderr.count("exitcode  : 2 ") == n and p.returncode != 0, tail
    assert p.stderr.count("Traceback") == 1, tail  # torchrun's own ChildFailedError
    return line


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs (a real full disk) needs root")


@pytest.mark.parametrize(
    "n, steps, size",
    [
        # 1 trainer, 1 generator: one process's checkpoint (HF model + Adam moments, ~21 MiB)
        # fits once in 30 MiB; step 2's fails, and the generator hears it at step 3's agreement
        (2, 3, "30m"),
        # 2 FSDP trainers, 1 generator: the shards (DCP, which fails on every trainer) and rank
        # 0's HF model (~28 MiB) fit once in 40 MiB; step 2, the last, fails at the end of the loop
        (3, 2, "40m"),
    ],
)
def test_a_failed_checkpoint_write_stops_every_rank_with_one_line(tmp_path, n, steps, size):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, size)
    try:
        out = disk / "run"
        args = ["--out", out, "--steps", steps, "--save-every", "1", "--generator-ranks", "1"]
        p = _torchrun(args, n=n)
        line = _one_line_on_every_rank(p, "r1kit: error: no space left on the device writing", n)
        assert line.endswith("; the newest complete checkpoint is step-000001"), line
        rows = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["step"] for r in rows] == [1, 2]  # nothing trained after it
        # the failed write left nothing --resume could take: step 1's checkpoint is its choice
        ckdir = out / "checkpoints"
        assert sorted(d.name for d in ckdir.iterdir()) == ["latest", "step-000001"]
        assert select_checkpoint(out) == ckdir / "step-000001"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_generator_failing_on_its_first_batch_stops_every_rank_with_its_line(tmp_path):
    """1 trainer, 2 generators; the reward plugin fails on the last rank alone (its node cannot
    reach the grading service) while the first batch is scored: the other generator, waiting
    for its share of the batch, and the trainer, waiting for the batch, end with its line."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "remote_reward.py").write_text(
        "import os\n\n"
        "from r1kit.errors import R1kitError\n\n\n"
        "def grade(completion, example):\n"
        "    if os.environ['RANK'] == '2':\n"
        "        raise R1kitError('the grading service at http://127.0.0.1:9 does not answer')\n"
        "    return 0.0\n"
    )
    out = tmp_path / "run"
    args = ["--out", out, "--steps", "2", "--generator-ranks", "2"]
    args += ["--rewards", "accuracy=1,remote_reward:grade=1"]
    p = _torchrun(args, pythonpath=str(plugin), n=3)
    line = "r1kit: error: the grading service at http://127.0.0.1:9 does not answer"
    assert _one_line_on_every_rank(p, line, n=3) == line
    assert (out / "metrics.jsonl").read_text() == "" and not (out / "checkpoints").exists()
