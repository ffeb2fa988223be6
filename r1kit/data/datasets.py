"""Problem sources for RL and evaluation: procedural tasks by name, or a JSONL file.

`train_stream` is endless and reproducible from a seed, so a resumed run skips exactly the
problems it already used; `heldout` is a fixed list of distinct held-out problems.

What loading checks (a bad file fails before anything heavy loads; a bad row never reaches a
run): a line that is not UTF-8 or not a JSON object is a one-line error naming `file:line`; a
row graded on its answer whose answer is missing, null or empty is dropped with a warning naming
`file:line` (JSON null would otherwise become the string "None", which a completion "None"
matches); a held-out question asked twice counts once; with a `PromptFit` (data/fit.py) prompts
too long for the model are dropped with a count.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1kit.data.fit import PromptFit
from r1kit.data.notes import places, warn
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


def scan_jsonl(path: str | Path, kind: str = "dataset file") -> Iterator[tuple[dict, int, int]]:
    """(object, line number, byte offset of the line) for each non-blank line, read as bytes one
    line at a time (a file of any size streams). One-line errors name `path:line`: a line that
    is not UTF-8, not JSON, or not a JSON object. Raises when the file is missing or holds no
    rows. A UTF-8 byte-order mark before the first line is skipped."""
    p = Path(path)
    if not p.is_file():
        raise R1kitError(f"{kind} not found: {path}")
    seen = False
    with p.open("rb") as f:
        offset = 0
        for n, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                col = len(raw[: err.start].decode("utf-8", "replace")) + 1
                raise R1kitError(
                    f"{path}:{n}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {col}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise R1kitError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise R1kitError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            seen = True
            yield row, n, start
    if not seen:
        raise R1kitError(f"{kind} is empty: {path}")


def jsonl_objects(path: str | Path, kind: str = "dataset file") -> list[tuple[dict, str]]:
    """(object, "path:line") for each non-blank line; errors as `scan_jsonl`'s."""
    return [(row, f"{path}:{n}") for row, n, _ in scan_jsonl(path, kind)]


def graded_on_answer(row: dict[str, Any]) -> bool:
    """Whether a row's reward reads its gold answer: not a programming problem (its tests are
    the gold) and not a row whose "rewards" list leaves accuracy out (a general prompt scored
    by a reward model, as the pipeline writes them)."""
    if row.get("tests"):
        return False
    applies = row.get("rewards")
    return applies is None or "accuracy" in applies


def read_rows(path: str | Path) -> tuple[list[Example], list[str]]:
    """Rows with a question (question/problem/prompt) and an answer, and "path:line" of each;
    errors name the line. A row graded on its answer whose answer is null or empty is dropped
    with a warning naming its line (every row dropped is an error)."""
    rows, wheres, empty = [], [], []
    for row, where in jsonl_objects(path):
        q = next((row[k] for k in QUESTION_FIELDS if isinstance(row.get(k), str)), None)
        if q is None or "answer" not in row:
            raise R1kitError(
                f"{where}: needs a question field ({'/'.join(QUESTION_FIELDS)}) and an answer"
            )
        answer = "" if row["answer"] is None else str(row["answer"])
        if not answer.strip() and graded_on_answer(row):
            empty.append(where)
            continue
        rows.append({**row, "question": q, "answer": answer})
        wheres.append(where)
    if empty:
        if not rows:
            raise R1kitError(f"{path}: every answer is null or empty ({places(empty)})")
        warn(f"dropped {len(empty)} row(s) of {path} with a null or empty answer: {places(empty)}")
    return rows, wheres


def read_jsonl(path: str | Path) -> list[Example]:
    """The rows of `read_rows`."""
    return read_rows(path)[0]


def distinct(
    rows: list[Example], wheres: list[str], source: str
) -> tuple[list[Example], list[str]]:
    """The rows with each question once (its first row); a warning says how many repeats went
    and where, so a repeated problem is not counted as two."""
    seen: set[str] = set()
    keep = [i for i, r in enumerate(rows) if not (r["question"] in seen or seen.add(r["question"]))]
    if len(keep) < len(rows):
        gone = sorted(set(range(len(rows))) - set(keep))
        warn(
            f"{source}: {len(gone)} held-out row(s) repeat an earlier question and are counted "
            f"once: {places([wheres[i] for i in gone])}"
        )
    return [rows[i] for i in keep], [wheres[i] for i in keep]


def _check_spec(spec: str) -> None:
    task_spec(spec)  # an unknown language after '@' names the known ones
    if task_names(spec) is None and not Path(spec).suffix == ".jsonl" and not Path(spec).exists():
        raise R1kitError(
            f"unknown dataset {spec!r}; use a task ({', '.join(TASKS)}, 'mix', or a+b) "
            "or a .jsonl file"
        )


def check_readable(spec: str) -> None:
    """A dataset that is a .jsonl file, read through once (UTF-8, one JSON object a line), so
    its `file:line` errors come before any model loads; task names need nothing."""
    _check_spec(spec)
    if task_names(spec) is None:
        for _ in scan_jsonl(spec):
            pass


def train_stream(spec: str, seed: int, fit: PromptFit | None = None) -> Iterator[Example]:
    """Training problems, endlessly, in an order fixed by `seed`: task names draw from their
    generators' train split, a .jsonl file repeats its train split (the hash-selected nine
    tenths, or every row when none falls there) in epochs, each shuffled. With `fit`, problems
    too long for the model are left out: a file's at once (a warning counts them), a
    generator's as they are drawn."""
    _check_spec(spec)
    names = task_names(spec)
    if names is not None:

        def problems() -> Iterator[Example]:
            rng = random.Random(seed)
            streams = [stream(TASKS[t], "train", seed * 7919 + i) for i, t in enumerate(names)]
            mixed = (next(rng.choice(streams)) for _ in itertools.count())
            return _worded(mixed, task_spec(spec)[1])

        if fit is None:
            return problems()
        fit.probe(problems(), f"training problems of {spec}")
        return fit.stream(problems())
    rows, wheres = read_rows(spec)
    train = [i for i, r in enumerate(rows) if split_of(r["question"]) == "train"]
    train = train or list(range(len(rows)))
    rows, wheres = [rows[i] for i in train], [wheres[i] for i in train]
    if fit is not None:
        rows = fit.keep(rows, "training problems", wheres)
    return _epochs(rows, seed)


def _epochs(rows: list[Example], seed: int) -> Iterator[Example]:
    rng = random.Random(seed)
    while True:
        order = rows[:]
        rng.shuffle(order)
        yield from order


def heldout(
    spec: str,
    n: int,
    seed: int = 1234,
    eval_file: str | None = None,
    fit: PromptFit | None = None,
) -> list[Example]:
    """n distinct held-out problems: from `eval_file`, the task generators' test split, or the
    hash-selected tenth of a JSONL dataset. A question asked twice counts once (a warning says
    so); with `fit`, problems too long for the model are left out (a warning counts them)."""
    if eval_file or task_names(spec) is None:
        if not eval_file:
            _check_spec(spec)
        rows, wheres = read_rows(eval_file or spec)
        if not eval_file:
            test = [i for i, r in enumerate(rows) if split_of(r["question"]) == "test"]
            rows, wheres = [rows[i] for i in test], [wheres[i] for i in test]
        rows, wheres = distinct(rows, wheres, eval_file or spec)
    else:
        _check_spec(spec)
        names = task_names(spec) or []
        per = [
            list(itertools.islice(stream(TASKS[t], "test", seed + i, unique=True), n))
            for i, t in enumerate(names)
        ]
        mixed = [ex for group in itertools.zip_longest(*per) for ex in group if ex is not None]
        rows, wheres = list(_worded(mixed, task_spec(spec)[1])), []
    if fit is not None:
        rows = fit.keep(rows, "held-out problems", wheres)
    return rows[:n]


def _worded(examples, language: str | None):
    """The examples as they are, or worded in `language` (same problems, same split)."""
    if language is None:
        return examples
    return (localize(ex, language) for ex in examples)
