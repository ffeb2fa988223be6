"""Grading sampled answers against gold with math-verify, with a per-answer timeout that works
from any thread or process.

math-verify's own timeouts use SIGALRM, which works only on a process's main thread (so
`rewards.math_grader.math_equal` runs it without one off the main thread). Here, plain numbers
are compared exactly in the caller; everything else is graded in a small pool of *spawned*
worker processes (safe beside CUDA and threads in the parent), each answer under its own
SIGALRM timer, while the parent keeps a hard deadline per answer and replaces the pool when a
worker is stuck where no signal reaches (a huge integer power inside C, say). A few answers on
the main thread (fewer than `inline_below`: a pool takes seconds to start), `workers=0`, or a
daemon process (which may not start children) are graded in the caller instead: under the same
timer on the main thread, without a timeout elsewhere. (Spawned workers import the main
module again: a script that grades many answers needs the usual `if __name__ == "__main__":`.)
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import signal
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from r1kit.chat import THINK_CLOSE, THINK_OPEN, extract_answer, last_boxed, split_reasoning
from r1kit.rewards.math_grader import as_fraction, delimited


@dataclass
class Grade:
    parsed: str | None  # the answer as read from the sample; None when it gave none
    key: str | None  # canonical form of that answer, for majority voting (cons@k)
    correct: bool
    timed_out: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def split_output(text: str, in_think: bool) -> tuple[str, str | None]:
    """(reasoning, answer) of a completion. When the prompt opened `<think>` (R1 chat template,
    R1-Zero template) or the text carries think tags, `chat.split_reasoning` decides: no
    `</think>` means the reasoning never ended and there is no answer. A completion of a model
    that does not think (no tags at all) is all answer."""
    if in_think or THINK_OPEN in text or THINK_CLOSE in text:
        return split_reasoning(text)
    return "", text.strip()


def candidate(answer: str | None, template: str = "chat") -> str | None:
    """The text to grade: a sample's answer part (after `</think>`; for the R1-Zero template the
    inside of `<answer>` when present). None when there is no answer part, i.e. the reasoning
    never closed: such a sample is wrong, as in the R1 protocol."""
    if answer is None or not answer.strip():
        return None
    if template == "r1zero":
        inner = extract_answer(answer, "r1zero")
        return inner if inner is not None else answer
    return answer


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _fast(text: str, gold: str) -> Grade | None:
    """Exact comparison when the boxed answer and the gold are both plain numbers."""
    boxed = last_boxed(text)
    a, b = as_fraction(boxed) if boxed is not None else None, as_fraction(gold)
    if a is None or b is None:
        return None
    return Grade(boxed, str(a), a == b)


def grade_one(text: str | None, gold: str) -> Grade:
    """Grade one answer text, no timeout: the last `\\boxed{}` if any, else whatever expression
    math-verify finds last in the text. Where math-verify parses neither side, identical text
    (whitespace aside) still counts as correct."""
    if text is None:
        return Grade(None, None, False)
    fast = _fast(text, gold)
    if fast is not None:
        return fast
    from math_verify import parse, verify

    boxed = last_boxed(text)
    gold_p = parse(delimited(gold), parsing_timeout=None)
    pred_p = parse(delimited(boxed) if boxed is not None else text, parsing_timeout=None)
    parsed = boxed if boxed is not None else (str(pred_p[1]) if len(pred_p) > 1 else None)
    correct = bool(gold_p and pred_p and verify(gold_p, pred_p, timeout_seconds=None))
    if not correct and parsed is not None and not (gold_p and pred_p):
        correct = _norm(parsed) == _norm(gold)
    key = _norm(str(pred_p[0])) if pred_p else (_norm(parsed) if parsed is not None else None)
    return Grade(parsed, key, correct)


class _Timeout(BaseException):  # BaseException: math-verify swallows Exception
    pass


def _alarm(signum, frame):
    raise _Timeout


def _load_math_verify() -> None:
    """Import math-verify before any timer starts (the first import takes seconds), and quiet its
    warning that its own timeouts are off: these functions time each answer themselves."""
    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)


def grade_timed(text: str | None, gold: str, timeout: float) -> Grade:
    """grade_one under a SIGALRM timer (main thread only); a timeout grades as wrong."""
    _load_math_verify()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return grade_one(text, gold)
        except Exception:  # math-verify or sympy failing on odd input: the answer is wrong
            return Grade(last_boxed(text or ""), None, False)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return Grade(last_boxed(text or ""), None, False, timed_out=True)
    finally:
        signal.signal(signal.SIGALRM, old)


def _grade_here(text: str | None, gold: str, timeout: float) -> Grade:
    if threading.current_thread() is threading.main_thread():
        return grade_timed(text, gold, timeout)
    _load_math_verify()
    return grade_one(text, gold)


class Grader:
    """Grades (answer text, gold) pairs; reuse one for a whole evaluation, then close it."""

    task = staticmethod(grade_timed)  # what a worker runs per answer: (text, gold, timeout)

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int | None = None,
        hard_timeout: float | None = None,
        inline_below: int = 32,
    ) -> None:
        self.timeout = timeout
        # a pool takes seconds to start: on the main thread, fewer answers are graded right here
        self.inline_below = inline_below
        # the parent's deadline for one answer, for when the worker's timer cannot fire
        self.hard_timeout = 2 * timeout + 10 if hard_timeout is None else hard_timeout
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers
        self._pool = None
        self._lock = threading.Lock()

    def grade(self, items: Sequence[tuple[str | None, str]]) -> list[Grade]:
        out: list[Grade | None] = [None] * len(items)
        slow = []
        for i, (text, gold) in enumerate(items):
            quick = Grade(None, None, False) if text is None else _fast(text, gold)
            if quick is not None:
                out[i] = quick
            else:
                slow.append(i)
        main = threading.current_thread() is threading.main_thread()
        inline = main and len(slow) < self.inline_below
        if slow and (inline or self.workers == 0 or mp.current_process().daemon):
            for i in slow:
                out[i] = _grade_here(*items[i], self.timeout)
        elif slow:
            with self._lock:
                self._grade_in_pool(items, slow, out)
        return out  # type: ignore[return-value]

    def _grade_in_pool(self, items, todo: list[int], out: list) -> None:
        while todo:
            if self._pool is None:
                ctx = mp.get_context("spawn")
                self._pool = ctx.Pool(self.workers, initializer=_load_math_verify)
            jobs = {i: self._pool.apply_async(self.task, (*items[i], self.timeout)) for i in todo}
            stuck = None
            for i in todo:  # tasks start in order, so each wait below bounds a running task
                try:
                    out[i] = jobs[i].get(timeout=self.hard_timeout)
                except mp.TimeoutError:
                    stuck = i
                    break
            if stuck is None:
                return
            out[stuck] = Grade(last_boxed(items[stuck][0] or ""), None, False, timed_out=True)
            for i in todo:
                if out[i] is None and jobs[i].ready():
                    out[i] = jobs[i].get()
            self.close()  # a worker is stuck beyond signals: replace the pool, redo the rest
            todo = [i for i in todo if out[i] is None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
