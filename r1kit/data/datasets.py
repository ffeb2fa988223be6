"""Problem sources for RL and evaluation: procedural tasks by name, or a JSONL file.

`train_stream` is endless and reproducible from a seed, so a resumed run skips exactly the
problems it already used; `heldout` is a fixed list of distinct held-out problems.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

from r1kit.data.tasks import MIX_TASKS, TASKS, Example, split_of, stream
from r1kit.data.tasks.zh import LANGUAGES, localize
from r1kit.errors import R1kitError

QUESTION_FIELDS = ("question", "problem", "prompt")
MIX = "mix"  # every procedural task, interleaved


def _language_suffix(spec: str) -> tuple[str, str | None]:
    """'mix@zh' -> ('mix', 'zh'); anything without '@' (or a .jsonl path) -> (spec, None)."""
    name, sep, lang = spec.rpartition("@")
    return (name, lang) if sep and not spec.endswith(".jsonl") else (spec, None)


def task_spec(spec: str) -> tuple[str, str | None]:
    """'mix@zh' -> ('mix', 'zh'): procedural tasks worded in another language (tasks/zh.py)."""
    name, lang = _language_suffix(spec)
    if lang is None or task_names(name) is None:
        return spec, None
    if lang not in LANGUAGES:
        raise R1kitError(
            f"dataset {spec!r}: no {lang!r} wording; languages: {', '.join(LANGUAGES)}"
        )
    return name, lang


def task_names(spec: str) -> list[str] | None:
    """'arith+linear' -> ['arith', 'linear']; 'mix' -> all; None when spec is not task names."""
    spec = _language_suffix(spec)[0]
    if spec == MIX:
        return list(MIX_TASKS)
    names = spec.split("+")
    return names if all(n in TASKS for n in names) else None


def jsonl_objects(path: str | Path, kind: str = "dataset file") -> list[tuple[dict, str]]:
    """(object, "path:line") for each non-blank line; one-line errors name the line. Raises when
    the file is missing or empty, or a line is not a JSON object."""
    p = Path(path)
    if not p.is_file():
        raise R1kitError(f"{kind} not found: {path}")
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise R1kitError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise R1kitError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append((row, f"{path}:{n}"))
    if not rows:
        raise R1kitError(f"{kind} is empty: {path}")
    return rows


def read_jsonl(path: str | Path) -> list[Example]:
    """Rows with a question (question/problem/prompt) and an answer; errors name the line."""
    rows = []
    for row, where in jsonl_objects(path):
        q = next((row[k] for k in QUESTION_FIELDS if isinstance(row.get(k), str)), None)
        if q is None or "answer" not in row:
            raise R1kitError(
                f"{where}: needs a question field ({'/'.join(QUESTION_FIELDS)}) and an answer"
            )
        rows.append({**row, "question": q, "answer": str(row["answer"])})
    return rows


def _check_spec(spec: str) -> None:
    task_spec(spec)  # an unknown language after '@' names the known ones
    if task_names(spec) is None and not Path(spec).suffix == ".jsonl" and not Path(spec).exists():
        raise R1kitError(
            f"unknown dataset {spec!r}; use a task ({', '.join(TASKS)}, 'mix', or a+b) "
            "or a .jsonl file"
        )


def train_stream(spec: str, seed: int) -> Iterator[Example]:
    _check_spec(spec)
    names = task_names(spec)
    if names is not None:
        rng = random.Random(seed)
        streams = [stream(TASKS[t], "train", seed * 7919 + i) for i, t in enumerate(names)]
        mixed = (next(rng.choice(streams)) for _ in itertools.count())
        return _worded(mixed, task_spec(spec)[1])
    rows = [r for r in read_jsonl(spec) if split_of(r["question"]) == "train"] or read_jsonl(spec)
    return _epochs(rows, seed)


def _epochs(rows: list[Example], seed: int) -> Iterator[Example]:
    rng = random.Random(seed)
    while True:
        order = rows[:]
        rng.shuffle(order)
        yield from order


def heldout(spec: str, n: int, seed: int = 1234, eval_file: str | None = None) -> list[Example]:
    """n distinct held-out problems: from `eval_file`, the task generators' test split, or the
    hash-selected tenth of a JSONL dataset."""
    if eval_file:
        return read_jsonl(eval_file)[:n]
    _check_spec(spec)
    names = task_names(spec)
    if names is None:
        return [r for r in read_jsonl(spec) if split_of(r["question"]) == "test"][:n]
    per = [
        list(itertools.islice(stream(TASKS[t], "test", seed + i, unique=True), n))
        for i, t in enumerate(names)
    ]
    mixed = [ex for group in itertools.zip_longest(*per) for ex in group if ex is not None]
    return list(_worded(mixed[:n], task_spec(spec)[1]))


def _worded(examples, language: str | None):
    """The examples as they are, or worded in `language` (same problems, same split)."""
    if language is None:
        return examples
    return (localize(ex, language) for ex in examples)
