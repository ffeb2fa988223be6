"""The run directory's lock: one process at a time writes a run.

OUT/run.lock holds an exclusive flock for the run's life. The OS releases it when the process
exits, however it exits (SIGKILL included), so a stale lock never blocks a later run. The file
also says who holds (or last held) it: {"job", "pid", "host", "started"}. Its presence marks OUT as
an r1kit run of that job, which is how a new run knows not to write over it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError

LOCK = "run.lock"


def _said(raw: bytes) -> dict[str, Any] | None:
    """run.lock's bytes as what they say (None: empty or garbled)."""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


def holder(out: Path) -> dict[str, Any] | None:
    """What OUT/run.lock says (the job that holds or last held OUT), or None."""
    try:
        return _said((Path(out) / LOCK).read_bytes())
    except OSError:
        return None


class RunLock:
    """An exclusive, non-blocking flock on OUT/run.lock; `acquire` fails in one line when another
    process holds it."""

    def __init__(self, out: Path, job: str) -> None:
        self.path = Path(out) / LOCK
        self.job = job
        self.fd: int | None = None
        self.found: bytes | None = None  # run.lock's bytes before acquire (None: it made it)

    def acquire(self) -> None:
        existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = holder(self.path.parent) or {}
            raise R1kitError(
                f"{self.path.parent} is in use by another run ({who.get('job', '?')}, pid "
                f"{who.get('pid', '?')} on {who.get('host', '?')}, since "
                f"{who.get('started', '?')}): let it finish or stop it first"
            ) from None
        self.found = os.pread(fd, 1 << 16, 0) if existed else None
        info = {
            "job": self.job,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd

    @property
    def before(self) -> dict[str, Any] | None:
        """What run.lock said before this process took it: the job that held OUT before."""
        return _said(self.found) if self.found is not None else None

    def restore(self) -> None:
        """Release after a refusal, leaving run.lock as acquire found it: a refused newcomer
        must not relabel the run in OUT (its job decides which --resume is accepted) nor leave a
        run.lock that marks a directory of other files as a run --overwrite may replace."""
        if self.fd is not None:
            if self.found is None:
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, self.found, 0)
        self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
