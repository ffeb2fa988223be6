"""Checked directories: what r1kit writes as a whole (a checkpoint, a final model) carries
DIR/manifest.json, the sha256 and size of every other file in it, written last, after every file
has been fsynced. A directory whose manifest is there and matches is complete and intact:

    {"version": 1, "files": {"model.safetensors": {"sha256": "9f2c...", "size": 6841992},
                             "dcp/__0_0.distcp": {...}, ...}}

Checkpoint choice lives here too (not in train/, which writes them) because `modeling` picks a
run directory's model and sits below train/: OUT/checkpoints/latest names the newest checkpoint,
OUT/checkpoints/step-NNNNNN are the checkpoints, and `choose_checkpoint` finds the newest intact
one, saying what it skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
VERSION = 1
CHUNK = 1 << 20  # bytes hashed at a time: a file is streamed, never read whole
STEP_DIR = re.compile(r"step-(\d+)")


def sha256_of(path: Path, sync: bool = False) -> str:
    """The file's sha256, read in CHUNK pieces; `sync` also fsyncs it (its writer may not)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()


def files_of(root: Path) -> list[str]:
    """Every regular file under `root` but the manifest, as sorted POSIX paths relative to it."""
    rels = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(r for r in rels if r != MANIFEST)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(root: str | Path) -> dict[str, Any]:
    """Hash (and fsync) every file under `root`, then write root/manifest.json, fsynced with
    its directories: call it last, when nothing else will be written into `root`."""
    root = Path(root)
    files = {
        rel: {"sha256": sha256_of(root / rel, sync=True), "size": (root / rel).stat().st_size}
        for rel in files_of(root)
    }
    manifest = {"version": VERSION, "files": files}
    with open(root / MANIFEST, "w") as f:
        f.write(json.dumps(manifest, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for d in {root, *((root / rel).parent for rel in files)}:
        fsync_dir(d)
    return manifest


def read_manifest(root: Path) -> dict[str, dict[str, Any]] | str:
    """The manifest's file table, or why there is none usable ("no manifest.json", ...)."""
    try:
        manifest = json.loads((root / MANIFEST).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{MANIFEST} is garbled"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
        for e in files.values()
    )
    return files if ok else f"{MANIFEST} is garbled"


_VERIFIED: dict[tuple, str | None] = {}  # (dir, full, every file's size and mtime) -> verdict


def check(root: str | Path, full: bool = True) -> str | None:
    """None when `root` matches its manifest, else the first problem in a few words
    ("model.safetensors: sha256 mismatch"). `full=False` checks presence and sizes only (a
    complete write), `full=True` every byte too. A verdict is remembered for as long as no
    file's size or mtime changes, so a process hashes a directory once."""
    root = Path(root)
    files = read_manifest(root)
    if isinstance(files, str):
        return files
    stats = []
    for rel, entry in files.items():
        try:
            st = (root / rel).stat()
        except OSError:
            return f"{rel}: missing"
        if st.st_size != entry["size"]:
            return f"{rel}: {st.st_size} bytes where {entry['size']} were written (truncated?)"
        stats.append((rel, st.st_size, st.st_mtime_ns))
    if not full:
        return None
    key = (str(root.resolve()), tuple(stats))
    if key not in _VERIFIED:
        bad = [rel for rel, e in files.items() if sha256_of(root / rel) != e["sha256"]]
        _VERIFIED[key] = f"{bad[0]}: sha256 mismatch" if bad else None
    return _VERIFIED[key]


def step_of(ckpt: Path) -> int:
    m = STEP_DIR.fullmatch(ckpt.name)
    return int(m.group(1)) if m else -1


def step_dirs(ckdir: Path) -> list[Path]:
    """OUT/checkpoints/step-NNNNNN directories, newest (highest step) first."""
    if not ckdir.is_dir():
        return []
    found = [p for p in ckdir.iterdir() if STEP_DIR.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=step_of, reverse=True)


# a directory written before manifests is used when these are there (a tuple: one of them):
# to resume a checkpoint (trainer state and weights), to load a model (config and weights)
RESUME_NEEDS = ("trainer_state.pt", ("model.safetensors", "dcp"))
MODEL_NEEDS = ("config.json", ("model.safetensors", "model.safetensors.index.json"))


def legacy_problem(root: Path, needs: tuple) -> str | None:
    """For a directory without a manifest: which needed file is missing, else None."""
    for need in needs:
        options = (need,) if isinstance(need, str) else need
        if not any((root / name).exists() for name in options):
            return f"{options[0]}: missing"
    return None


@dataclass
class Choice:
    """What choose_checkpoint found: the checkpoint (None when there is none intact), what it
    skipped and why (one phrase each), whether it could not be verified (no manifest), and how
    many step-* directories there were."""

    path: Path | None = None
    skipped: list[str] = field(default_factory=list)
    unverified: bool = False
    found: int = 0


def checkpoint_problem(ckpt: Path, full: bool, needs: tuple) -> tuple[str | None, bool]:
    """(problem or None, unverified): a checkpoint without a manifest is accepted unverified
    when the files `needs` names are there."""
    problem = check(ckpt, full)
    if problem == f"no {MANIFEST}":
        missing = legacy_problem(ckpt, needs)
        return (f"{missing}, no {MANIFEST}" if missing else None), missing is None
    return problem, False


def choose_checkpoint(out: str | Path, full: bool = True, needs: tuple = RESUME_NEEDS) -> Choice:
    """The newest intact checkpoint of run directory `out`: the one OUT/checkpoints/latest
    names when it is intact, else the highest intact step-* directory. `needs`: what one
    written before manifests must hold to be used (RESUME_NEEDS, or MODEL_NEEDS to load it)."""
    ckdir = Path(out) / "checkpoints"
    dirs = step_dirs(ckdir)
    choice = Choice(found=len(dirs))
    if not dirs:
        return choice
    pointer = ckdir / "latest"
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
    except FileNotFoundError:
        name = None
        choice.skipped.append("checkpoints/latest is missing")
    except (OSError, UnicodeDecodeError):
        name = ""
        choice.skipped.append("checkpoints/latest is unreadable")
    if name == "" and not choice.skipped:
        choice.skipped.append("checkpoints/latest is empty")
    elif name and not (STEP_DIR.fullmatch(name) and (ckdir / name).is_dir()):
        choice.skipped.append(f"checkpoints/latest names {name[:40]!r}, not a checkpoint")
        name = None
    order = dirs
    if name:
        order = [ckdir / name] + [d for d in dirs if d.name != name]
    for ckpt in order:
        problem, unverified = checkpoint_problem(ckpt, full, needs)
        if problem is None:
            choice.path, choice.unverified = ckpt, unverified
            return choice
        choice.skipped.append(f"checkpoint {ckpt.name} is damaged ({problem})")
    return choice
