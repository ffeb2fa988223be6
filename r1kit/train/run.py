"""The skeleton every training job shares (GRPO, SFT, pretraining, distillation's student).

    run = Run(out, "zero", resume=True, progress=True)
    start = run.resume_from(state)         # a checkpoint's step, or 0; metrics past it dropped
    run.write_config(cfg_dict)             # OUT/config.json
    with run.bar(total, start) as bar:
        for step in ...:
            run.log(row)                   # OUT/metrics.jsonl
            bar.advance(f"loss {loss:.3f}")
            if run.due(step, total, save_every, out_of_time):
                run.save(step, ...)        # OUT/checkpoints/step-NNNNNN (train/checkpoint.py)
    run.finish(summary)                    # OUT/summary.json

Under torchrun every rank makes the same calls: rank 0 writes the run's files, every rank
writes its own shards of a checkpoint, and decisions that end the loop (the time limit) are
agreed over the ranks so every rank leaves it at the same step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from r1kit import dist
from r1kit.errors import R1kitError
from r1kit.train.checkpoint import latest_checkpoint, save_checkpoint, save_sharded_checkpoint


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
    """The rows of a metrics.jsonl (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Bar:
    """A rich progress bar over a run's steps; silent when progress is off or not rank 0."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress, self.task = progress, task

    def advance(self, description: str = "") -> None:
        self.progress.update(self.task, advance=1, description=description)


class Run:
    """One training run's directory and bookkeeping; see the module docstring."""

    def __init__(self, out: str | Path, job: str, resume: bool = False, progress: bool = True):
        self.out = Path(out)
        self.job = job
        self.main = dist.is_main()  # rank 0 writes the run's files
        if self.main:
            prepare_out(self.out)
        dist.barrier()
        self.progress = progress and self.main
        self.console = Console(quiet=not self.progress)
        self.checkpoint = latest_checkpoint(self.out) if resume else None
        self.resumed = resume
        self.t0 = time.time()
        self.wall_before = 0.0  # seconds spent before the checkpoint this run resumed from
        self.metrics_path = self.out / "metrics.jsonl"

    # -- files -----------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        if self.main:
            (self.out / name).write_text(json.dumps(obj, indent=2))

    def read_json(self, name: str) -> Any | None:
        """A file an earlier attempt of this run wrote (only when resuming), else None."""
        path = self.out / name
        return json.loads(path.read_text()) if self.resumed and path.exists() else None

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_json("config.json", config)

    def resume_from(self, state: dict[str, Any] | None) -> int:
        """The step to start from: the checkpoint's (its trainer state), else 0. Metrics rows
        past it are dropped, so a resumed run's metrics.jsonl reads as one uninterrupted run."""
        start = state["step"] if state else 0
        self.wall_before = state.get("wall_s", 0.0) if state else 0.0
        if state:
            self.console.print(f"resuming {self.out} from step {start}")
        kept = [m for m in read_metrics(self.metrics_path) if m["step"] <= start]
        if self.main:
            self.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))
        return start

    def log(self, row: dict[str, Any]) -> None:
        if self.main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

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

    def out_of_time(self, limit_s: float) -> bool:
        """The time limit (> 0) is reached; the ranks agree (any rank over it stops all)."""
        over = 0 < limit_s <= self.wall()
        return dist.all_reduce(over, "max") > 0

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
        extra = {**extra, "wall_s": self.wall()}
        if dist.world() > 1:
            return save_sharded_checkpoint(
                self.out, step, model, full_model, tokenizer, optimizer, extra
            )
        return save_checkpoint(self.out, step, model, tokenizer, optimizer, extra)
