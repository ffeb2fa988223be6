"""What a run trained and evaluated on, as content hashes, so a `--resume` notices when the data
changed under it (an edited file would otherwise go unnoticed: the resumed run would draw other
problems than the checkpoint's data position counted, and the base-vs-final table would compare
different held-out problems).

A file is hashed by its bytes (streamed, 1 MiB at a time: any size); data generated in memory
(procedural tasks, worked traces, a hub split) by its rows as canonical JSON. A run records
{"train": {...}, "heldout": {...}} in OUT/data.json (train/run.py `Run.record_data`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r1kit.data.datasets import task_names, train_stream

CHUNK = 1 << 20
PROBE_ROWS = 256  # rows of an endless generator hashed: a changed generator changes them


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def rows_digest(rows: Iterable[Any]) -> str:
    """sha256 of rows as canonical JSON lines (sorted keys), in their order."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def stream_digest(rows: Iterable[Any]) -> str:
    """sha256 of the first PROBE_ROWS rows of an endless stream."""
    return rows_digest(itertools.islice(rows, PROBE_ROWS))


def entry(source: str, sha256: str, **extra: Any) -> dict[str, Any]:
    """One part of data.json: where the data came from and its hash."""
    return {"source": source, "sha256": sha256, **extra}


def changes(saved: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """The parts of `now` whose hash differs from `saved` (a run's earlier data.json), each as
    "the training data (x.jsonl: sha256 1a2b3c4d5e6f, was 9f8e7d6c5b4a)"; none when nothing
    was saved (a run from before data.json existed)."""
    if not saved:
        return []
    names = {"train": "the training data", "heldout": "the held-out problems"}
    out = []
    for part, cur in now.items():
        old = saved.get(part)
        if old is not None and old.get("sha256") != cur.get("sha256"):
            was = "" if old.get("source") == cur.get("source") else f" {old.get('source')}"
            out.append(
                f"{names.get(part, part)} ({cur.get('source')}: sha256 {cur['sha256'][:12]}, "
                f"was{was} {str(old.get('sha256'))[:12]})"
            )
    return out


def problems_identity(
    spec: str, seed: int, heldout: list[dict], heldout_source: str
) -> dict[str, Any]:
    """data.json of an RL run: the training problems (a file's bytes, or a generator's first
    rows from `seed`) and the held-out problems it evaluates (the rows themselves)."""
    if task_names(spec) is None:
        train = entry(spec, file_digest(spec))
    else:
        train = entry(spec, stream_digest(train_stream(spec, seed)))
    return {
        "train": train,
        "heldout": entry(heldout_source, rows_digest(heldout), problems=len(heldout)),
    }
