"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

# errors of the file system under a path, not of the program: the user fixes them
_DISK = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# below this many free bytes, a write that failed without an errno (torch.save says "unexpected
# pos ..." and safetensors "I/O error ... os error 28") failed because the disk is full
FULL_BELOW = 64 << 20


class R1kitError(Exception):
    """Bad input or an unusable environment, explained in one line for the user."""

    exit_code = 2
    prefix = "error: "


class Stopped(R1kitError):
    """The run stopped on request (SIGTERM, Ctrl-C) after saving what it needs to continue."""

    prefix = ""

    def __init__(self, message: str, signum: int = 15) -> None:
        super().__init__(message)
        self.exit_code = (
            128 + signum
        )  # 143 for SIGTERM: what a scheduler expects of a job it stopped


def disk_error(err: BaseException, where: str | Path | None = None) -> str | None:
    """One line for an error of the file system (full, read-only, no permission), else None.

    `where` is the directory being written, used when the error names no file and to tell a full
    disk behind an error without an errno."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK:
            path = seen.filename or where or "?"
            return f"{_DISK[seen.errno]} writing {path}"
        text = str(seen)
        if "No space left on device" in text or "os error 28" in text:
            return f"{_DISK[errno.ENOSPC]} writing {where or '?'}"
        seen = seen.__cause__ or seen.__context__
    if where is not None and not isinstance(err, OSError):
        try:
            free = shutil.disk_usage(Path(where)).free
        except OSError:
            return None
        if free < FULL_BELOW and isinstance(err, RuntimeError):
            return f"{_DISK[errno.ENOSPC]} writing {where} ({free >> 20} MiB free)"
    return None
