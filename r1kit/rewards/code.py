"""The code reward: run the model's program against the example's tests in the sandbox.

The program (`chat.code_in`) is the last fenced Python block of the answer part (after `</think>`); for the
R1-Zero template an unfenced `<answer>...</answer>` counts too. An example carries its tests as
"tests" (Python statements, e.g. `assert f([1, 2]) == [2, 4]`, run one by one after the
program in its namespace), optionally "entry_point" (the function the tests call) and "prefix"
(HumanEval's prompt: put before a completion that does not define the entry point itself).

    code           1 when every test passes, else 0
    code_fraction  the share of tests that pass

`prepare(completions, examples)` runs a whole batch in the sandbox's worker pool first (the
rollout scorer calls it), so the per-completion calls that follow are cache look-ups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from r1kit.chat import code_in, split_reasoning
from r1kit.rewards.base import register
from r1kit.sandbox import ExecResult, Sandbox, shared


def extract_code(completion: str, template: str = "r1zero") -> str | None:
    """The program in a completion's answer part, or None when it has none."""
    return code_in(split_reasoning(completion)[1], template)


def program_of(code: str, example: Mapping[str, Any]) -> str:
    """The program to run: the code, after the example's prefix when the code does not define
    the entry point itself (a HumanEval completion that continues the prompt's signature)."""
    entry, prefix = example.get("entry_point"), example.get("prefix")
    if prefix and entry and not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
        return prefix + code
    return code


def tests_of(example: Mapping[str, Any]) -> list[str]:
    tests = example.get("tests") or []
    return [tests] if isinstance(tests, str) else list(tests)


class CodeReward:
    """reward(completion, example): the sandboxed test result (all-pass, or the fraction)."""

    def __init__(self, sandbox: Sandbox | None = None, fraction: bool = False) -> None:
        self._sandbox = sandbox
        self.fraction = fraction
        self._cache: dict[tuple[str, tuple[str, ...]], ExecResult] = {}

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox or shared()

    def job(self, completion: str, example: Mapping[str, Any]) -> tuple[str, tuple] | None:
        """(program, tests) to run, or None when there is nothing to run (no code or no tests)."""
        content = split_reasoning(completion)[1]
        return self.job_of(content, example, example.get("template", "r1zero"))

    def job_of(self, content: str | None, example: Mapping[str, Any], template: str):
        tests = tests_of(example)
        code = code_in(content, template)
        if not tests or code is None:
            return None
        return program_of(code, example), tuple(tests)

    def result(self, completion: str, example: Mapping[str, Any]) -> ExecResult | None:
        return self.run(self.job(completion, example))

    def grade(self, content: str | None, example: Mapping[str, Any], template: str):
        """(the program, whether every test passed) for an answer part; the accuracy reward and
        `r1kit eval` grade programming problems with this."""
        job = self.job_of(content, example, template)
        res = self.run(job)
        return (None if job is None else job[0]), bool(res and res.all_passed)

    def run(self, job: tuple[str, tuple] | None) -> ExecResult | None:
        """The result of a (program, tests) job, from the cache or run now."""
        if job is None:
            return None
        if job not in self._cache:
            if len(self._cache) > 50_000:  # called without prepare(): keep memory bounded
                self._cache.clear()
            self._cache[job] = self.sandbox.run(*job)
        return self._cache[job]

    def prepare(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> None:
        """Run every distinct (program, tests) of a batch in parallel; keep only these results."""
        self.prepare_jobs([j for c, e in zip(completions, examples) if (j := self.job(c, e))])

    def prepare_jobs(self, jobs: Sequence[tuple[str, tuple]]) -> None:
        distinct = set(jobs)
        todo = [j for j in distinct if j not in self._cache]
        results = self.sandbox.run_many(todo) if todo else []
        self._cache = {j: self._cache[j] for j in distinct if j in self._cache}
        self._cache.update(zip(todo, results))

    def __call__(self, completion: str, example: Mapping[str, Any]) -> float:
        res = self.result(completion, example)
        if res is None:
            return 0.0
        return res.fraction if self.fraction else float(res.all_passed)


CODE = register("code")(CodeReward())
CODE_FRACTION = register("code_fraction")(CodeReward(fraction=True))
