"""The skeleton every training job shares (GRPO, SFT, pretraining, distillation's student).

    run = Run(out, "zero", resume=True, progress=True)
    start = run.resume_from(state)         # a checkpoint's step, or 0; metrics past it dropped
    run.write_config(cfg_dict)             # OUT/config.json
    with run.bar(total, start) as bar:
        for step in ...:
            run.log(row)                   # OUT/metrics.jsonl
            bar.advance(f"loss {loss:.3f}")
            if run.due(step, total, save_every, run.stopping(limit_s)):
                run.save(step, ...)        # OUT/checkpoints/step-NNNNNN (train/checkpoint.py)
    run.finish(summary)                    # OUT/summary.json

Under torchrun every rank makes the same calls: rank 0 writes the run's files, every rank
writes its own shards of a checkpoint, and decisions that end the loop (the time limit) are
agreed over the ranks so every rank leaves it at the same step.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from r1kit import dist
from r1kit.data.identity import changes
from r1kit.errors import R1kitError, Stopped, disk_error
from r1kit.train.checkpoint import (
    KEEP_LAST,
    latest_checkpoint,
    save_checkpoint,
    save_final,
    save_sharded_checkpoint,
    select_checkpoint,
)
from r1kit.train.files import (
    append_jsonl,
    dumps,
    read_json,
    read_jsonl,
    warn,
    write_json,
    write_text,
)
from r1kit.train.finite import require_finite
from r1kit.train.lock import LOCK, RunLock

# the signals that stop a run at its next step boundary (a second one stops it at once)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Under torchrun a signal to the process group (a scheduler's stop, Ctrl-C at the terminal)
# reaches each worker twice: directly, then forwarded by torchrun one monitor interval (0.1 s)
# later. A repeat this soon is that forward, the same stop, not a second "stop now".
FORWARDED_WITHIN_S = 1.0


def how_to_continue(job: str | None, out: Path) -> str | None:
    """The command that continues a run of `job` in OUT (None: the job keeps nothing to continue
    from: pretraining starts over)."""
    return {
        "zero": f"`r1kit zero --resume {out}`",
        "sft": f"`r1kit sft --resume {out}`",
        "distill": f"`r1kit distill --resume {out}`",
        "pipeline": "the same `r1kit pipeline` command again",
    }.get(job or "")


# what only an r1kit run writes at OUT's top: runs from before run.lock existed are known by
# these. Not config.json or final/ alone: a model directory has a config.json, and --overwrite
# must never take one for a run it may delete
RUN_FILES = {"metrics.jsonl", "summary.json", "checkpoints"}


def prepare_out(out: Path) -> None:
    """Create `out` and check it can be written: a read-only or impossible path fails at once,
    in one line, before any model loads."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise R1kitError(f"output directory {out} is not writable ({err.strerror})") from None


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl (none when it does not exist; a torn last row skipped with a
    warning)."""
    return read_jsonl(path)


class Bar:
    """A rich progress bar over a run's steps; silent when progress is off or not rank 0."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress, self.task = progress, task

    def advance(self, description: str = "") -> None:
        self.progress.update(self.task, advance=1, description=description)


class Run:
    """One training run's directory and bookkeeping; see the module docstring.

    Used as a context manager (`with Run(...) as run:`) it holds OUT for the run's life: an
    exclusive lock (train/lock.py: a second run or a --resume of a live run is refused), SIGTERM
    turned into "save at the next step boundary, then stop" (jobs with checkpoints), and on the
    way out an error of the file system (full disk, read-only, no permission) turned into one line
    with the run's temp files removed; a run that fails before writing anything leaves no
    directory behind.

    OUT must be new or empty, or hold a run of the same job that this one continues (`resume`) or
    replaces (`overwrite`). `checkpoints=False` is for jobs that keep none (pretraining starts
    over; distillation reuses what its phases wrote): resume then needs no checkpoint.
    """

    def __init__(
        self,
        out: str | Path,
        job: str,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
        checkpoints: bool = True,
        keep_last: int = KEEP_LAST,
    ):
        self.out = Path(out)
        self.job = job
        self.main = dist.is_main()  # rank 0 writes the run's files
        self.has_checkpoints = checkpoints
        self.lock = RunLock(self.out, job)
        self.created = False  # this run made OUT (removed again if it fails before any write)
        # rank 0 takes the directory; its refusal (one line) is raised on every rank
        dist.on_main(lambda: self._take(resume, overwrite))
        self.progress = progress and self.main
        self.console = Console(quiet=not self.progress, soft_wrap=True)  # a line stays one line
        self.keep_last = keep_last  # checkpoints kept (0: all)
        try:  # the newest intact checkpoint (verified; a skipped one is named, with why)
            self.checkpoint = dist.on_main(lambda: select_checkpoint(self.out)) if resume else None
        except R1kitError:
            self._release()
            raise
        if resume and checkpoints and self.checkpoint is None:
            self._release()
            if self.created and self.main:
                shutil.rmtree(self.out, ignore_errors=True)
            raise R1kitError(
                f"{self.out} has no checkpoint to resume from (the run stopped before its first "
                "save): start it again with --overwrite"
            )
        self.resumed = resume
        self.terminated = False  # SIGTERM or Ctrl-C: save at the next step boundary, then stop
        self.stop_signal = signal.SIGTERM  # which one (ranks that only agreed: SIGTERM)
        self.signalled_at = 0.0  # time.monotonic() of the first stop signal
        self.final_phase = False  # past the last step (see finishing())
        self._old_handlers: dict[int, Any] = {}
        self.t0 = time.time()
        self.wall_before = 0.0  # seconds spent before the checkpoint this run resumed from
        self.metrics_path = self.out / "metrics.jsonl"

    @classmethod
    def of(cls, part: Any, job: str, resume: bool = False, progress: bool = True) -> Run:
        """The Run of a job's config part (config/parts.py TrainRun: out, overwrite,
        keep_last)."""
        return cls(
            part.out, job, resume, progress, overwrite=part.overwrite, keep_last=part.keep_last
        )

    def _take(self, resume: bool, overwrite: bool) -> None:
        """Rank 0: create OUT, lock it, and check what is in it (see the class docstring)."""
        self.created = not self.out.exists()
        prepare_out(self.out)
        self.lock.acquire()
        prior = self.lock.before
        prior_job = prior.get("job") if isinstance(prior, dict) else None
        others = [p.name for p in self.out.iterdir() if p.name != LOCK]
        is_run = prior_job is not None or any(p in RUN_FILES for p in others)
        if resume and prior_job not in (None, self.job):
            self.lock.restore()
            hint = how_to_continue(prior_job, self.out)
            raise R1kitError(
                f"{self.out} holds a {prior_job} run, not a {self.job} run"
                + (f": continue it with {hint}" if hint else "")
            )
        if not others:
            return
        if not is_run:  # other files: never written beside nor replaced, whatever the flags
            self.lock.restore()
            raise R1kitError(
                f"{self.out} is not empty and holds no r1kit run ({len(others)} entries): "
                "choose another --out"
            )
        if resume:
            return
        if not overwrite:
            self.lock.restore()
            hint = how_to_continue(prior_job or self.job, self.out)
            raise R1kitError(
                f"{self.out} already holds a {prior_job or 'an earlier'} run: "
                + (f"continue it with {hint}, " if hint else "")
                + "replace it with --overwrite, or choose another --out"
            )
        self.console_line(f"replacing the run in {self.out} (--overwrite)")
        for name in others:
            path = self.out / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()

    def console_line(self, text: str) -> None:
        if self.main:
            print(text, file=sys.stderr)

    def _release(self) -> None:
        self.lock.release()

    # -- the run's life --------------------------------------------------------------------
    def __enter__(self) -> Run:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGTERM (a scheduler) or Ctrl-C: with checkpoints, save at the end of this step and
        stop (Run.save raises Stopped); a second one, or a job without checkpoints, stops now."""
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.terminated and dist.launched() and now - self.signalled_at < FORWARDED_WITHIN_S:
            return  # torchrun's forward of the signal this worker already has
        if self.final_phase and not self.terminated and latest_checkpoint(self.out):
            # the last step's checkpoint holds the trained weights: stop now, --resume redoes
            # only what comes after the steps (the final evaluation and model)
            raise Stopped(
                f"stopped by {name} during the final evaluation; the trained weights are in "
                f"{latest_checkpoint(self.out)}: {how_to_continue(self.job, self.out)} "
                "evaluates them and writes final/",
                signum,
            )
        if self.terminated or not self.has_checkpoints:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            if self.has_checkpoints:  # the second SIGTERM: die as without the handler
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            hint = how_to_continue(self.job, self.out)
            raise Stopped(
                f"stopped by {name}; "
                + (f"continue with {hint}" if hint else "start it again with --overwrite"),
                signum,
            )
        self.terminated = True
        self.signalled_at = now
        self.stop_signal = signum
        again = "Ctrl-C" if signum == signal.SIGINT else name
        self.console_line(
            f"{name}: saving a checkpoint at the end of this step, then stopping "
            f"({again} again stops at once, without saving)"
        )

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> bool:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()
        try:
            if err is None or not self.main:
                return False
            line = disk_error(err, self.out)  # before the temp files go: they fill the disk
            self._remove_temps()
            if self.created and all(p.name == LOCK for p in self.out.iterdir()):
                shutil.rmtree(self.out, ignore_errors=True)  # a failed start leaves nothing
            if line is not None and not isinstance(err, R1kitError):
                raise self.unsaved(line) from None
            return False
        finally:
            self._release()

    def unsaved(self, line: str) -> R1kitError:
        """A failed write's one line (errors.disk_error's words) with the newest complete
        checkpoint named, the one --resume continues from."""
        newest = latest_checkpoint(self.out)
        hint = f"; the newest complete checkpoint is {newest.name}" if newest else ""
        return R1kitError(f"{line}{hint}")

    def _remove_temps(self) -> None:
        """The partial files of an interrupted write (checkpoints' and final's temp dirs, atomic
        writes' temp files); complete files are never touched."""
        temps = [p for p in self.out.rglob("*") if p.name.startswith(".tmp") or p.suffix == ".tmp"]
        for path in temps:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)

    # -- files -----------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        if self.main:
            write_json(self.out / name, obj)  # atomic: temp file, fsync, rename

    def read_json(self, name: str) -> Any | None:
        """A file an earlier attempt of this run wrote (only when resuming), else None."""
        return read_json(self.out / name) if self.resumed else None

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_json("config.json", config)

    def record_data(self, identity: dict[str, Any], allow_change: bool = False) -> None:
        """OUT/data.json: the hashes of the data this run trains and evaluates on
        (data/identity.py). A resumed run whose data changed is refused in one line, unless
        `allow_change` (--allow-data-change), which goes on with a warning."""
        changed = changes(self.read_json("data.json"), identity)
        if changed and not allow_change:
            raise R1kitError(
                f"{' and '.join(changed)} changed since {self.out} started; restore it, or "
                "resume with --allow-data-change to continue on the new data"
            )
        if changed:
            warn(f"continuing on changed data (--allow-data-change): {' and '.join(changed)}")
        self.write_json("data.json", identity)

    def resume_from(self, state: dict[str, Any] | None) -> int:
        """The step to start from: the checkpoint's (its trainer state), else 0. Metrics rows
        past it are dropped, so a resumed run's metrics.jsonl reads as one uninterrupted run."""
        start = state["step"] if state else 0
        self.wall_before = state.get("wall_s", 0.0) if state else 0.0
        if state:
            self.console.print(f"resuming {self.out} from step {start}")
        kept = [m for m in read_metrics(self.metrics_path) if m["step"] <= start]
        if self.main:
            write_text(self.metrics_path, "".join(dumps(m) + "\n" for m in kept))
        return start

    def log(self, row: dict[str, Any]) -> None:
        if self.main:
            append_jsonl(self.metrics_path, row)  # flushed and fsynced

    def metrics(self) -> list[dict]:
        dist.barrier()  # rank 0's rows are on disk
        return read_metrics(self.metrics_path)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        self.write_json("summary.json", summary)
        dist.barrier()
        return summary

    # -- time and progress -----------------------------------------------------------------
    def wall(self) -> float:
        """Seconds of training so far, over every attempt of this run."""
        return self.wall_before + time.time() - self.t0

    def stopping(self, limit_s: float = 0.0) -> bool:
        """The loop should end after this step: the time limit (> 0) is reached or SIGTERM
        arrived. The ranks agree (any rank's reason stops all at the same step)."""
        # 2: SIGTERM here, 1: over time; the max over ranks, so a SIGTERM that reached one rank
        # stops every rank as a SIGTERM (each saves, then raises Stopped)
        reason = 2 if self.terminated else int(0 < limit_s <= self.wall())
        agreed = dist.all_reduce(reason, "max")
        self.terminated = agreed >= 2
        return agreed > 0

    def finishing(self) -> None:
        """The steps are done and checkpointed; what follows (the final evaluation, final/,
        the summary) is redone by --resume, so a stop signal from now on stops at once."""
        self.final_phase = True

    @contextmanager
    def bar(self, total: int, start: int = 0) -> Iterator[Bar]:
        cols = [
            TextColumn(f"[bold]{self.job}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        ]
        with Progress(*cols, console=self.console, disable=not self.progress) as progress:
            yield Bar(progress, progress.add_task("", total=total, completed=start))

    # -- checkpoints -----------------------------------------------------------------------
    @staticmethod
    def due(step: int, total: int, every: int, stopping: bool = False) -> bool:
        """The save policy: every `every` steps, at the last step, and when the run stops early."""
        return step % every == 0 or step == total or stopping

    def save(
        self,
        step: int,
        model: Any,
        tokenizer: Any,
        optimizer: Any,
        extra: dict[str, Any],
        full_model: Any = None,
    ) -> Path:
        """A crash-safe checkpoint of `step`: the plain HF model in one process; under torchrun
        the shards (dcp/) and, from `full_model` when there is one, the HF model beside them."""
        require_finite(model, f"checkpoint step-{step:06d}")  # every rank: its shards, agreed
        extra = {**extra, "wall_s": self.wall()}
        if dist.world() > 1:
            path = save_sharded_checkpoint(
                self.out, step, model, full_model, tokenizer, optimizer, extra, self.keep_last
            )
        else:
            path = save_checkpoint(
                self.out, step, model, tokenizer, optimizer, extra, self.keep_last
            )
        if self.terminated:  # every rank: stopping() agreed on this step
            name = signal.Signals(self.stop_signal).name
            raise Stopped(
                f"stopped by {name} after step {step}; checkpoint {path} is saved: continue "
                f"with {how_to_continue(self.job, self.out) or '--resume'}",
                self.stop_signal,
            )
        return path

    def save_final(self, model: Any, tokenizer: Any) -> Path:
        """OUT/final (rank 0): written to a temp dir with its manifest, then renamed, so it is
        complete or absent, never half-written."""
        require_finite(model, f"{self.out / 'final'}", agree=False)  # rank 0 alone calls this
        return save_final(self.out, model, tokenizer)
