"""Run files that are never torn: whole files are written to a temp file in the same directory,
fsynced and renamed over the old one (a reader sees the old file or the new one, never half);
JSONL rows are appended and fsynced one at a time, and a reader skips a torn last row (the one a
crash or a full disk can leave) with a one-line warning.

    write_text(path, text)        atomic: temp file, flush, fsync, os.replace, fsync the directory
    write_json(path, obj)         write_text of dumps(obj, indent=2): standard JSON, NaN as null
    read_json(path)               the object, or None (with a warning) when the file is garbled
    append_jsonl(path, row)       one row, flushed and fsynced; a failed write is cut back off
    read_jsonl(path)              the rows; a torn last row skipped with a warning, a torn row
                                  elsewhere an R1kitError naming file:line

Files are created 0666 less the umask (0644 under the usual 022), like any file `open` makes.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError


def warn(message: str) -> None:
    """One line on stderr, as the CLI prints its errors."""
    print(f"r1kit: warning: {message}", file=sys.stderr, flush=True)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside `path` (same filesystem, so os.replace is atomic)."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably; the temp file is removed on failure."""
    path = Path(path)
    tmp = temp_name(path)
    # O_EXCL: never write through someone else's file; mode 0o666 & ~umask as `open` would
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def strict(obj: Any) -> Any:
    """`obj` with every non-finite float (a skipped step's NaN loss, an inf norm) as None: JSON
    has no NaN, and `jq`, JavaScript and pandas' strict readers reject Python's bare `NaN`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Standard JSON: non-finite floats become null (see `strict`)."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON object in `path`; None when it is missing, or garbled (a warning says so: the
    files read this way are caches their writer can rebuild)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        warn(f"{path} is not valid JSON ({err}); ignoring it")
        return None


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row to a JSONL file, flushed and fsynced before returning. When the write
    fails part-way (a full disk), the file is cut back to its old length, so no torn row stays
    behind to glue itself to the next one."""
    line = (dumps(row) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        size = f.tell()
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            try:
                f.truncate(size)
            except OSError:
                pass  # the reader skips a torn last row anyway
            raise


def parse_row(raw: bytes) -> dict[str, Any] | None:
    """One JSONL line as a dict, or None when it is not one (torn, garbled)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file that `append_jsonl` writes (none when it does not exist), read
    line by line. A torn LAST row is skipped with a one-line warning; a bad row followed by good
    ones is not a crash's trace but damage, and an R1kitError names its file:line."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    bad: int | None = None  # line number of a bad row not yet known to be the last
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if bad is not None:
                raise R1kitError(
                    f"{path}:{bad}: not a JSON object (the file is damaged): repair or delete "
                    "that line, then run again"
                )
            row = parse_row(raw)
            if row is None:
                bad = number
            else:
                rows.append(row)
    if bad is not None:
        warn(f"{path}:{bad}: skipping a torn last row (an interrupted write)")
    return rows
