"""Stage caches of the multi-stage jobs (`r1kit pipeline`, `r1kit distill`): a stage's result is
reused only when the hash of everything that decides it is the one it was made with.

    inputs = {"config": {...flat job fields...}, "after": previous stage's output id, ...}
    key = key_of(inputs)                   # sha256 of the canonical JSON, 16 hex digits
    plan = decide(marker, key, inputs)     # reuse | resume | run, and the one-line reason

A stage's record is written atomically: while it runs, {"done": false, "key", "inputs"} (an
interrupted stage with the same key resumes from its checkpoint; the pipeline keeps this one in
OUT/attempts/, outside the stage's run directory, which its job owns), and once complete
{"done": true, "key", "inputs", "output_id", ...} (pipeline: OUT/NN-NAME/stage.json; distill:
OUT/student.json). `output_id` is fresh each time a stage runs, and the next stage hashes it, so
a stage that re-runs re-runs every stage after it. A missing, 0-byte or garbled record means
"not done" (one warning line), never a crash or a block.

Values that name a local file are hashed by content (a dataset edited in place is a new input);
a local directory by its files' names, sizes and modification times (model weights are large).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1kit import manifest
from r1kit.errors import R1kitError
from r1kit.train import files
from r1kit.train.checkpoint import latest_checkpoint, select_checkpoint

# job fields that say where or how often a run writes, not what it computes
NOT_RESULT = frozenset(
    {"out", "save_every", "keep_last", "overwrite", "resume", "quiet", "allow_data_change"}
)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_fingerprint(path: Path) -> str:
    """sha256 over (relative name, size, mtime) of every file under `path`."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        st = p.stat()
        h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def identity(value: Any, root: Path | None = None) -> Any:
    """`value` as it enters a key: a string naming a local file or directory gains its content
    fingerprint ('PATH#sha256'); a path under `root` (this job's own output, covered by the
    stage chain) is written relative to it, so the key survives moving the whole directory.
    Comma-joined sources (SFT data) are taken one by one."""
    if isinstance(value, dict):
        return {k: identity(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [identity(v, root) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if "," in value:
        return ",".join(str(identity(part, root)) for part in value.split(","))
    path = Path(value)
    if root is not None:
        try:
            return f"OUT/{path.resolve().relative_to(root.resolve())}"
        except ValueError:
            pass
    try:
        if path.is_file():
            return f"{value}#{file_sha256(path)[:16]}"
        if path.is_dir():
            return f"{value}#{dir_fingerprint(path)[:16]}"
    except OSError:
        pass
    return value


def result_fields(flat: dict[str, Any]) -> dict[str, Any]:
    """A job's flat config without the fields that do not change its result."""
    return {k: v for k, v in flat.items() if k not in NOT_RESULT}


def key_of(inputs: dict[str, Any]) -> str:
    text = json.dumps(inputs, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_output_id(key: str) -> str:
    """The identity of one run's output: the key plus a fresh nonce (a re-run of the same key,
    e.g. `--only`, is a new output the next stages must not take for the old one)."""
    return f"{key}-{secrets.token_hex(4)}"


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = k if prefix in ("", "config") else f"{prefix}.{k}"
        out.update(_leaves(v, name))
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def changes(old: dict[str, Any] | None, new: dict[str, Any], limit: int = 3) -> str:
    """What differs between two inputs dicts, by flat field name: 'lr 1e-06 -> 2e-06, epochs 3
    -> 4' (at most `limit`, then '+N more')."""
    a, b = _leaves(old or {}), _leaves(new)
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    parts = [f"{k} {_short(a.get(k, '<unset>'))} -> {_short(b.get(k, '<unset>'))}" for k in diff]
    more = f", +{len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def read_marker(path: Path) -> dict[str, Any] | None:
    """A stage marker, or None when missing, empty or garbled (garbled: one warning line)."""
    if path.exists() and path.stat().st_size == 0:
        files.warn(f"{path} is empty (an interrupted write or a full disk): the stage reruns")
        return None
    data = files.read_json(path)
    if data is not None and not isinstance(data, dict):
        files.warn(f"{path} is not a stage record: the stage reruns")
        return None
    return data


def write_marker(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, record)


@dataclass
class Plan:
    action: str  # "reuse", "resume" or "run"
    why: str  # one line: why it is reused, resumed or run


def why_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """'config changed (lr 1e-06 -> 2e-06)', or what else of the inputs changed."""
    old = old or {}
    if old.get("config") != new.get("config"):
        return f"config changed ({changes(old.get('config'), new.get('config') or {})})"
    if "after" in new and old.get("after") != new.get("after"):
        return "the stage before it was re-run since"
    return f"inputs changed ({changes(old, new)})"


def decide(
    marker: dict[str, Any] | None,
    key: str,
    inputs: dict[str, Any],
    output_ok: bool = True,
    can_resume: bool = False,
    started: bool = False,
) -> Plan:
    """Reuse a finished stage with this key and its output in place; resume an interrupted one
    with this key (`can_resume`: it left a checkpoint); run anything else, saying why. `started`:
    the stage's directory exists (so a missing marker is a lost or unreadable one)."""
    if marker is None:
        if started:
            return Plan("run", "no complete stage record (missing, empty or unreadable)")
        return Plan("run", "not run yet")
    if "key" not in marker:
        return Plan("run", "its stage record has no cache key (an older r1kit wrote it)")
    same = marker["key"] == key
    if marker.get("done"):
        if same and output_ok:
            return Plan("reuse", f"config and inputs unchanged (key {key[:8]})")
        if same:
            return Plan("run", "its output is missing")
        return Plan("run", why_changed(marker.get("inputs"), inputs))
    if same and can_resume:
        return Plan("resume", f"interrupted, same key {key[:8]}")
    if same:
        return Plan("run", "interrupted before its first checkpoint")
    return Plan("run", f"interrupted, and since then {why_changed(marker.get('inputs'), inputs)}")


def resumable(run_dir: Path) -> bool:
    """`run_dir` has a checkpoint to resume from, checked as --resume checks it (sha256 of every
    file): a stage whose checkpoints are all damaged starts over (one warning line) instead of
    failing every re-run. Cheap when there is none."""
    if latest_checkpoint(run_dir) is None:
        return False
    try:
        return select_checkpoint(run_dir) is not None
    except R1kitError:
        files.warn(f"no intact checkpoint in {run_dir / 'checkpoints'}: the stage starts over")
        return False


def final_problem(run_dir: Path) -> str | None:
    """Why `run_dir`/final is not a complete model, in a few words (None: it is), by the check
    modeling's run_model makes before loading it: manifest present and every size matching (a
    final/ from before manifests: its config and weights there). A reused stage needs one: the
    next stage loads it."""
    final = Path(run_dir) / "final"
    if not final.is_dir():
        return "its final/ is missing"
    problem = manifest.check(final, full=False)
    if problem == f"no {manifest.MANIFEST}":
        problem = manifest.legacy_problem(final, manifest.MODEL_NEEDS)
    return None if problem is None else f"its final/ is incomplete ({problem})"
