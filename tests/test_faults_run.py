"""Faults around a run's directory (issue 18), with real `r1kit zero` runs of the embedded
model: a second run or a --resume of a live run, SIGTERM mid-run, a full disk, a read-only
--out, an existing run without --resume/--overwrite, a failed start. Each ends in the outcome
the README's "What a run guarantees" promises, and every resume reaches the weights of an
uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launch import env as launch_env
from launch import torchrun, torchrun_cmd
from safetensors.torch import load_file

from r1kit.config import ZeroConfig
from r1kit.errors import R1kitError
from r1kit.rl.zero import run_zero
from r1kit.train import checkpoint

FLAGS = [
    "--quiet",
    "--dataset",
    "arith",
    "--steps",
    "4",
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
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def r1kit(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CMD, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess, code: int, match: str) -> None:
    """The CLI's answer to a fault: exit `code`, one line on stderr naming `match`, no
    traceback."""
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], proc.stderr[-2000:]


def same_weights(a: Path, b: Path) -> None:
    wa = load_file(a / "model.safetensors")
    wb = load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:  # the same operations in the same order, stopped and resumed or not: bitwise
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run: the weights every interrupted-then-resumed run must reach."""
    out = tmp_path_factory.mktemp("straight") / "run"
    p = r1kit("--out", out, *FLAGS)
    assert p.returncode == 0, p.stderr[-2000:]
    return out


def test_live_run_holds_its_directory(tmp_path):
    out = tmp_path / "run"
    long = [*FLAGS, "--steps", "1000", "--save-every", "1000"]  # alive until killed
    proc = subprocess.Popen([*CMD, "--out", str(out), *long], env=ENV)
    try:
        deadline = time.time() + 300
        while not (out / "metrics.jsonl").exists():  # training: config.json is written
            assert proc.poll() is None and time.time() < deadline, "run ended early"
            time.sleep(0.05)
        # a second run, and a --resume, of the live run are refused: nothing of it is touched
        one_line_error(
            r1kit("--out", out, *FLAGS), 2, f"is in use by another run (zero, pid {proc.pid}"
        )
        one_line_error(r1kit("--resume", out, "--quiet"), 2, "is in use by another run")
        assert proc.poll() is None  # the live run goes on
    finally:
        proc.kill()  # SIGKILL: the OS drops the lock with the process
        proc.wait()
    # the lock went with the process; the run saved nothing yet, so --resume says so
    one_line_error(r1kit("--resume", out, "--quiet"), 2, "has no checkpoint to resume from")


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130)],  # a scheduler's stop; Ctrl-C
    ids=["sigterm", "ctrl-c"],
)
def test_stop_signal_saves_at_a_step_boundary_then_resume_matches(tmp_path, straight, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*CMD, "--out", str(out), *FLAGS], env=ENV, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-000001").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended early"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    name = signal.Signals(sig).name
    assert f"stopped by {name} after step" in err and f"r1kit zero --resume {out}" in err
    assert not (out / "final").exists()
    stopped_at = int((out / "checkpoints" / "latest").read_text().split("-")[1])
    assert stopped_at < 4  # the run did stop early, at a step boundary, with a checkpoint

    p = r1kit("--resume", out, "--quiet")
    assert p.returncode == 0, p.stderr[-2000:]
    same_weights(straight / "final", out / "final")


def test_existing_run_is_refused_unless_resume_or_overwrite(tmp_path, straight):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    before = sorted(p.name for p in out.rglob("*"))
    lock_before = (out / "run.lock").read_text()
    one_line_error(
        r1kit("--out", out, *FLAGS),
        2,
        f"already holds a zero run: continue it with `r1kit zero --resume {out}`",
    )
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing touched
    # run.lock still names the run's own job: a refused newcomer that wrote itself there would
    # relabel the run (then `zero --resume` is refused as another job's run)
    assert (out / "run.lock").read_text() == lock_before
    # another job's --resume names the job the run belongs to
    p = subprocess.run(
        [sys.executable, "-m", "r1kit.cli", "sft", "--resume", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    one_line_error(p, 2, "holds a zero run, not a sft run")
    # a directory of other files is never a run, and never overwritten
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    one_line_error(r1kit("--out", other, *FLAGS), 2, "holds no r1kit run")
    # the refusal left no run.lock to mark the directory as a run that --overwrite may replace
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]
    one_line_error(r1kit("--out", other, "--overwrite", *FLAGS), 2, "holds no r1kit run")
    assert (other / "todo.txt").read_text() == "mine"


def test_failed_start_leaves_no_directory(tmp_path):
    out = tmp_path / "new"
    p = r1kit("--out", out, "--model", tmp_path / "no-such-model", *FLAGS)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not out.exists()


def test_resume_without_a_checkpoint_refuses_instead_of_starting_over(tmp_path, straight):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    shutil.rmtree(out / "checkpoints")
    metrics = (out / "metrics.jsonl").read_text()
    one_line_error(r1kit("--resume", out, "--quiet"), 2, "has no checkpoint to resume from")
    assert (out / "metrics.jsonl").read_text() == metrics


def _mount_tmpfs(path: Path, size: str, *opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    options = ",".join((f"size={size}", *opts))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB file system: the embedded model's first checkpoint (~27 MiB with its optimizer
    state) fits, the second does not."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "40m"):
        pytest.skip("mounting a tmpfs needs root (test_full_disk_injected covers the same path)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_is_one_line_and_the_run_resumes_elsewhere(tmp_path, small_disk, straight):
    out = small_disk / "run"
    p = r1kit("--out", out, *FLAGS)
    one_line_error(p, 2, "no space left on the device writing")
    newest = (out / "checkpoints" / "latest").read_text().strip()  # what fitted
    assert f"the newest complete checkpoint is {newest}" in p.stderr
    assert not [q for q in out.rglob("*") if ".tmp" in q.name]  # partial files removed
    # the user frees space (here: moves the run to a bigger disk) and resumes
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    p = r1kit("--resume", moved, "--quiet")
    assert p.returncode == 0, p.stderr[-2000:]
    same_weights(straight / "final", moved / "final")


def test_full_disk_injected(tmp_path, monkeypatch):
    """The same fault without a small file system: the second checkpoint's weights fail with
    ENOSPC as a real full disk does."""
    real = checkpoint.save_model
    calls = []

    def save_model(model, tok, path):
        calls.append(path)
        if len(calls) == 2:
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(model, tok, path)

    monkeypatch.setattr(checkpoint, "save_model", save_model)
    cfg = ZeroConfig(dataset="arith")
    cfg.run.out = str(tmp_path / "run")
    cfg.run.steps, cfg.run.save_every = 4, 1
    cfg.algo.prompts_per_step, cfg.algo.group_size = 2, 4
    cfg.eval.problems, cfg.eval.k = 2, 1
    cfg.sampling.max_tokens = 16
    with pytest.raises(R1kitError, match="no space left on the device writing") as err:
        run_zero(cfg, progress=False)
    assert "the newest complete checkpoint is step-000001" in str(err.value)
    out = Path(cfg.run.out)
    assert not [q for q in out.rglob("*") if ".tmp" in q.name]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000001"


def test_read_only_out_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 2+3?", "answer": "5"}\n')
    if not _mount_tmpfs(ro, "1m", "ro"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        one_line_error(r1kit("--out", ro / "run", *FLAGS), 2, "not writable")
        p = subprocess.run(
            [sys.executable, "-m", "r1kit.cli", "eval", "--data", data, "--out", ro / "eval"],
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert len(p.stderr.strip().splitlines()) == 1 and "read-only" in p.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_under_torchrun_the_lock_and_sigterm_hold_for_every_rank(tmp_path):
    """2 gloo ranks: a second Run on the held OUT is refused on both ranks; a SIGTERM that
    reached rank 1 alone stops both ranks at the same step, both as a SIGTERM (each saves its
    shards, then raises Stopped)."""
    out = tmp_path / "run"
    torchrun(2, Path(__file__).with_name("dist_run_worker.py"), out)
    for rank in (0, 1):
        seen = json.loads(Path(f"{out}.rank-{rank}.json").read_text())
        assert seen["refused"] and "is in use by another run (test, pid" in seen["refused"]
        assert seen["stopping"] is True and seen["terminated"] is True


def test_pretrain_stopped_by_sigterm_says_so_in_one_line(tmp_path):
    """Pretraining keeps no checkpoints: SIGTERM stops it at once, in one line that says how to
    start again (it used to die silently)."""
    out = tmp_path / "base"
    cmd = [sys.executable, "-m", "r1kit.cli", "pretrain", "--quiet", "--steps", "5000"]
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "metrics.jsonl").exists():  # training has begun
        assert proc.poll() is None and time.time() < deadline, "pretraining ended early"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM; start it again with --overwrite" in lines[0]


def test_damaged_config_is_one_line(tmp_path, straight):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    (out / "config.json").write_text('{"run": {"out": ')  # torn by a crash of another tool
    one_line_error(r1kit("--resume", out, "--quiet"), 2, "config.json is damaged")


def test_a_model_directory_is_never_taken_for_a_run(tmp_path):
    """--out pointing at a model (config.json, weights) is refused even with --overwrite: only
    files an r1kit run alone writes mark a directory as a run that --overwrite may replace."""
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    one_line_error(r1kit("--out", model, "--overwrite", *FLAGS), 2, "holds no r1kit run")
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]


def test_a_process_group_sigterm_under_torchrun_still_saves(tmp_path):
    """A scheduler (or `kill -TERM -PGID`) signals torchrun's whole process group: each worker
    gets the SIGTERM directly and again when torchrun forwards it, a monitor interval (0.1 s)
    later. That repeat is the same stop, not the user's second 'stop now': the ranks still save
    at the step boundary and say so. The two deliveries are made here, 0.2 s apart, to both
    workers (torchrun itself is left alone so that it forwards nothing more)."""
    out = tmp_path / "run"
    flags = [f for f in FLAGS if f != "--quiet"] + ["--steps", "40"]  # argparse: the last wins
    proc = subprocess.Popen(
        torchrun_cmd(2, "-m", "r1kit.cli", "zero", "--out", out, *flags, "--quiet"),
        env=launch_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-000001").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended early"
        time.sleep(0.05)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [int(pid) for pid in children]
    assert len(workers) == 2, children
    for _ in range(2):  # the direct delivery, then torchrun's forward
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.2)
    _, err = proc.communicate(timeout=300)
    assert "stopped by SIGTERM after step" in err, err[-3000:]
    stopped_at = int((out / "checkpoints" / "latest").read_text().split("-")[1])
    assert 1 <= stopped_at < 40 and not (out / "final").exists()


def test_sigterm_during_the_final_evaluation_stops_at_once_and_resume_finishes(tmp_path):
    """The steps are done and checkpointed: a SIGTERM during the final evaluation stops now
    (not after minutes of evaluating, past a scheduler's grace period) and says where the
    weights are; --resume evaluates them and writes final/ without training again."""
    out = tmp_path / "run"
    flags = [*FLAGS, "--eval-problems", "300", "--eval-k", "4"]  # argparse: the last wins
    loud = [f for f in flags if f != "--quiet"]  # its console says when the evaluation begins
    proc = subprocess.Popen(
        [*CMD, "--out", str(out), *loud],
        env={**ENV, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # the base evaluation, the steps, then the final evaluation
        if "evaluating the trained model" in line:
            break
    else:
        raise AssertionError(f"the run ended early: {proc.stderr.read()[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "during the final evaluation" in lines[0], err
    assert f"r1kit zero --resume {out}" in lines[0] and "step-000004" in lines[0]
    assert not (out / "final").exists() and not (out / "summary.json").exists()

    p = r1kit("--resume", out, *flags)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # nothing trained again
