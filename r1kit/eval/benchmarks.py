"""Benchmarks: R1's math set from the Hugging Face hub by name, or any JSONL with a field mapping.

Every row becomes a problem {"id", "question", "gold", "reference"}: `gold` is the answer that
samples are graded against (the answer field; GSM8K's text after `####`; the last `\\boxed{}` of
a solution when a dataset has only solutions), `reference` is what `--gold` scores as if a model
wrote it (the worked solution when the benchmark says so, else the reference answer, boxed).
A row of a procedural task (a "task" field naming one of `r1kit.data.tasks`, as in the held-out
file of `zero` and `pipeline`) is graded by that task's checker, as the accuracy reward grades
it: the problem carries the row as "check" (Countdown rows need no answer field).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from r1kit.chat import last_boxed
from r1kit.data.datasets import jsonl_objects
from r1kit.data.tasks import TASKS
from r1kit.errors import R1kitError
from r1kit.modeling import hub_check


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub_id: str | None = None
    split: str = "test"
    config: str | None = None
    question_fields: tuple[str, ...] = ("problem", "question", "prompt")
    answer_field: str | None = "answer"
    solution_field: str | None = "solution"
    id_fields: tuple[str, ...] = ("unique_id", "id")
    reference: str = "answer"  # --gold scores the "solution" (its boxed answer) or the "answer"
    k: int = 4  # samples per problem in the R1 protocol
    named: tuple[tuple[str, str], ...] = ()  # (flag, field) the user named: the data must have it


BENCHMARKS = {
    b.name: b
    for b in [
        Benchmark("math500", "HuggingFaceH4/MATH-500", reference="solution", k=16),
        Benchmark("aime24", "HuggingFaceH4/aime_2024", split="train", k=64),
        Benchmark("aime25", "math-ai/aime25", k=64),
        Benchmark("amc23", "math-ai/amc23", k=32),
        Benchmark("gsm8k", "openai/gsm8k", config="main", question_fields=("question",), k=4),
    ]
}

_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)  # GSM8K: the final answer after "####"


def get_benchmark(
    name: str | None,
    data: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    solution_field: str | None = None,
) -> Benchmark:
    """The spec for a built-in name (its fields also map a local copy given with --data), or a
    generic one named after the --data file; explicit field flags override either."""
    if name is not None:
        if name not in BENCHMARKS:
            raise R1kitError(
                f"unknown benchmark {name!r}; built in: {', '.join(BENCHMARKS)} "
                "(or pass --data FILE.jsonl)"
            )
        b = BENCHMARKS[name]
    elif data is not None:
        b = Benchmark(Path(data).stem, reference="auto")
    else:
        raise R1kitError(f"pass --benchmark ({', '.join(BENCHMARKS)}) or --data FILE.jsonl")
    if question_field:
        b = replace(b, question_fields=(question_field,))
    if answer_field:
        b = replace(b, answer_field=answer_field)
    if solution_field:
        b = replace(b, solution_field=solution_field)
    flags = [
        ("question-field", question_field),
        ("answer-field", answer_field),
        ("solution-field", solution_field),
    ]
    return replace(b, named=tuple((flag, f) for flag, f in flags if f))


def load_problems(b: Benchmark, data: str | None = None, limit: int | None = None) -> list[dict]:
    """The first `limit` problems of the benchmark, from `data` (JSONL) or the hub."""
    rows = _read_jsonl(data) if data else _load_hub(b)
    _check_named_fields(b, rows, data or b.hub_id or b.name)
    if limit is not None:
        rows = rows[:limit]
    problems = [_problem(b, row, where, i) for i, (row, where) in enumerate(rows)]
    ids = [p["id"] for p in problems]
    if len(set(ids)) != len(ids):  # ids must key samples for resume: fall back to row numbers
        for i, p in enumerate(problems):
            p["id"] = str(i)
    return problems


def _check_named_fields(b: Benchmark, rows: list[tuple[dict, str]], source: str) -> None:
    """A field named with --question-field/--answer-field/--solution-field that no row has (a
    misspelling) is an error naming the fields the data has, not a silent fallback."""
    have: dict[str, None] = {}
    for row, _ in rows:
        have.update(dict.fromkeys(row))
    for flag, field in b.named:
        if field not in have:
            raise R1kitError(
                f"--{flag} {field!r}: no such field in {source} (its fields: "
                f"{', '.join(map(str, have)) or 'none'})"
            )


def _read_jsonl(path: str) -> list[tuple[dict, str]]:
    return jsonl_objects(path, kind="data file")


def _load_hub(b: Benchmark) -> list[tuple[dict, str]]:
    try:
        import datasets
    except ImportError:
        raise R1kitError(
            "loading benchmarks from the hub needs `datasets` (pip install datasets); "
            "or pass --data FILE.jsonl"
        ) from None
    hub_check(b.hub_id, "dataset")  # unreachable hub: offline at once, not a minute of retries
    try:
        ds = datasets.load_dataset(b.hub_id, b.config, split=b.split)
    except Exception as err:  # offline, renamed, gated: all end here, in one line
        raise R1kitError(
            f"cannot load {b.hub_id} from the Hugging Face hub ({type(err).__name__}); "
            "if this machine is offline, pass a local copy with --data FILE.jsonl"
        ) from None
    return [(dict(row), f"{b.hub_id} row {i}") for i, row in enumerate(ds)]


def _problem(b: Benchmark, row: dict[str, Any], where: str, index: int) -> dict:
    fields = ", ".join(row) or "none"
    q = next((row[f] for f in b.question_fields if isinstance(row.get(f), str)), None)
    if q is None:
        want = "/".join(b.question_fields)
        raise R1kitError(
            f"{where}: no question field {want!r} (fields: {fields}); map it with --question-field"
        )
    answer = row.get(b.answer_field) if b.answer_field else None
    solution = row.get(b.solution_field) if b.solution_field else None
    boxed = last_boxed(solution) if isinstance(solution, str) else None
    task = _task(row)
    if answer is not None and str(answer).strip():
        gold = gold_of(str(answer))
    elif boxed is not None:
        gold = boxed
    elif task is not None:
        gold = ""  # the task's checker decides
    else:
        raise R1kitError(
            f"{where}: no answer field {b.answer_field!r} (fields: {fields}); map it with "
            "--answer-field, or --solution-field for solutions with a \\boxed{} answer"
        )
    use_solution = b.reference in ("solution", "auto") and boxed is not None
    reference = solution if use_solution else _boxed_reference(str(answer or gold), gold)
    pid = next((row[f] for f in b.id_fields if row.get(f) is not None), None)
    pid = index if pid is None else pid
    problem = {"id": str(pid), "question": q, "gold": gold, "reference": reference}
    if task is not None:
        reasoning, final = task.trace(row, random.Random(0), "careful")
        problem.update(check=row, reference=f"{reasoning}\n\n\\boxed{{{final}}}")
    return problem


def _task(row: dict[str, Any]):
    """The procedural task a row belongs to (its "task" field), or None."""
    name = row.get("task")
    return TASKS.get(name) if isinstance(name, str) else None


def gold_of(answer: str) -> str:
    """The gold answer in an answer field: GSM8K's `#### 42`, a `\\boxed{}`, or the text itself."""
    m = _FINAL.search(answer)
    if m:
        return m.group(1).strip()
    boxed = last_boxed(answer)
    return boxed if boxed is not None else answer.strip()


def _boxed_reference(answer: str, gold: str) -> str:
    """A reference answer written as a model would: GSM8K's worked answer with `#### x` turned
    into `\\boxed{x}`, else the answer boxed."""
    if _FINAL.search(answer):
        return _FINAL.sub(lambda m: f"\\boxed{{{m.group(1).strip()}}}", answer)
    return answer if "\\boxed" in answer else f"\\boxed{{{gold}}}"
