"""Grading sampled answers against gold with `r1kit.grading` (the one grader, which the accuracy
reward also calls), with a per-answer timeout that works from any thread or process.

math-verify's own timeouts use SIGALRM, which works only on a process's main thread. Here,
plain numbers are compared exactly in the caller; everything else is graded in a small pool of
*spawned* worker processes (safe beside CUDA and threads in the parent), each answer under its
own SIGALRM timer, while the parent keeps a hard deadline per answer and replaces the pool when
a worker is stuck where no signal reaches (a huge integer power inside C, say). A few answers on
the main thread (fewer than `inline_below`: a pool takes seconds to start), `workers=0`, or a
daemon process (which may not start children) are graded in the caller instead: under the same
timer on the main thread, without a timeout elsewhere. (Spawned workers import the main
module again: a script that grades many answers needs the usual `if __name__ == "__main__":`.)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Mapping, Sequence

from r1kit import grading
from r1kit.chat import THINK_CLOSE, THINK_OPEN, extract_answer, last_boxed, split_reasoning
from r1kit.grading import Grade, load_math_verify
from r1kit.rewards.rules import grade_example

__all__ = ["Grade", "Grader", "candidate", "grade_one", "grade_timed", "split_output"]


def split_output(text: str, in_think: bool) -> tuple[str, str | None]:
    """(reasoning, answer) of a completion. When the prompt opened `<think>` (R1 chat template,
    R1-Zero template) or the text carries think tags, `chat.split_reasoning` decides: no
    `</think>` means the reasoning never ended and there is no answer. A completion of a model
    that does not think (no tags at all) is all answer."""
    if in_think or THINK_OPEN in text or THINK_CLOSE in text:
        return split_reasoning(text)
    return "", text.strip()


def candidate(answer: str | None, template: str = "chat") -> str | None:
    """The answer to grade from a sample's answer part (after `</think>`), by `r1kit.grading`'s
    rule: R1-Zero, the inside of `<answer>` (None without one); chat, the last `\\boxed{}`, else
    the expression math-verify finds. None means no answer: wrong."""
    return grading.extract(answer, template)


def _cheap(answer: str | None, gold: str | Mapping, template: str) -> Grade | None:
    """The grade when no math-verify is needed (no answer; both plain numbers), else None; in
    the caller, before any worker. Only the cheap extractions are tried here: `<answer>` and the
    last box (the chat fallback needs math-verify, so a worker does it)."""
    if answer is None or not answer.strip():
        return Grade(None, None, False)
    if isinstance(gold, Mapping):  # a task's checker: in a worker
        return None
    if template == "r1zero":
        pred = extract_answer(answer, "r1zero")
        pred = last_boxed(pred) or pred if pred else None
    else:
        pred = last_boxed(answer)
        if pred is None:
            return None
    return grading.quick(pred, gold)


def grade_one(text: str | None, gold: str | Mapping, template: str = "chat") -> Grade:
    """Grade one sample's answer part (None: no `</think>`), no timeout: `r1kit.grading.grade`
    against a gold answer, or for a procedural task's row (a mapping) its checker, exactly as the
    accuracy reward does (`rewards.rules.grade_example`)."""
    if isinstance(gold, Mapping):
        return grade_example(text, gold, template)
    return grading.grade(text, gold, template)


class _Timeout(BaseException):  # BaseException: math-verify swallows Exception
    pass


def _alarm(signum, frame):
    raise _Timeout


def _timed_out(text: str | None, template: str) -> Grade:
    pred = extract_answer(text, "r1zero") if template == "r1zero" else last_boxed(text or "")
    return Grade(pred, None, False, timed_out=True)


def grade_timed(
    text: str | None, gold: str | Mapping, timeout: float, template: str = "chat"
) -> Grade:
    """grade_one under a SIGALRM timer (main thread only); a timeout grades as wrong.
    (math-verify is loaded before the timer starts: its first import takes seconds.)"""
    load_math_verify()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return grade_one(text, gold, template)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return _timed_out(text, template)
    finally:
        signal.signal(signal.SIGALRM, old)


def _grade_here(text: str | None, gold: str | Mapping, timeout: float, template: str) -> Grade:
    if threading.current_thread() is threading.main_thread():
        return grade_timed(text, gold, timeout, template)
    load_math_verify()
    return grade_one(text, gold, template)


class Grader:
    """Grades (answer part, gold) pairs of one prompt format (`template`: what is graded in an
    answer part, see `r1kit.grading`); reuse one for a whole evaluation, then close it."""

    # what a worker runs per answer: (text, gold, timeout, template)
    task = staticmethod(grade_timed)

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int | None = None,
        hard_timeout: float | None = None,
        inline_below: int = 32,
        template: str = "chat",
    ) -> None:
        self.timeout = timeout
        self.template = template
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
            quick = _cheap(text, gold, self.template)
            if quick is not None:
                out[i] = quick
            else:
                slow.append(i)
        main = threading.current_thread() is threading.main_thread()
        inline = main and len(slow) < self.inline_below
        if slow and (inline or self.workers == 0 or mp.current_process().daemon):
            for i in slow:
                out[i] = _grade_here(*items[i], self.timeout, self.template)
        elif slow:
            with self._lock:
                self._grade_in_pool(items, slow, out)
        return out  # type: ignore[return-value]

    def _grade_in_pool(self, items, todo: list[int], out: list) -> None:
        while todo:
            if self._pool is None:
                ctx = mp.get_context("spawn")
                self._pool = ctx.Pool(self.workers, initializer=load_math_verify)
                self._warm_up()
            args = {i: (*items[i], self.timeout, self.template) for i in todo}
            jobs = {i: self._pool.apply_async(self.task, args[i]) for i in todo}
            stuck = None
            for i in todo:  # tasks start in order, so each wait below bounds a running task
                try:
                    out[i] = jobs[i].get(timeout=self.hard_timeout)
                except mp.TimeoutError:
                    stuck = i
                    break
            if stuck is None:
                return
            out[stuck] = _timed_out(items[stuck][0], self.template)
            for i in todo:
                if out[i] is None and jobs[i].ready():
                    out[i] = jobs[i].get()
            self.close()  # a worker is stuck beyond signals: replace the pool, redo the rest
            todo = [i for i in todo if out[i] is None]

    def _warm_up(self, limit: float = 120.0) -> None:
        """Wait until a worker has started and run the task once (on an empty answer): starting
        a process and its imports take seconds on a busy machine, which is no answer's time, so
        the per-answer deadlines start after it. A pool that does not start within `limit`
        seconds is left to those deadlines."""
        try:
            self._pool.apply_async(self.task, ("", "0", self.timeout, self.template)).get(limit)
        except mp.TimeoutError:
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
