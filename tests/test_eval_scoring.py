"""Grading with math-verify (timeouts in threads and processes) and cons@k's majority vote."""

from __future__ import annotations

import math
import signal
import threading
import time

import pytest

from r1kit.eval.scoring import Grader, candidate, grade_one, grade_timed, split_output
from r1kit.sampling.metrics import cons_at_k, majority_vote, pass_at_k, summarize


@pytest.mark.parametrize(
    "text, gold, correct",
    [
        ("so \\boxed{18}.", "18", True),
        ("\\boxed{1,450,000}", "1,450,000", True),
        ("\\boxed{025}", "25", True),  # AIME's zero-padded answers
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        (
            "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            True,
        ),
        ("\\boxed{\\$18.90}", "\\$18.90", True),  # an escaped dollar is a currency sign
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True),
        ("first \\boxed{3}, then \\boxed{4}", "4", True),  # the last box counts
        ("\\boxed{17}", "18", False),
        ("The answer is 44.", "44", True),  # no box: math-verify finds the last expression
        ("no numbers here", "44", False),
    ],
)
def test_grade_one(text, gold, correct):
    assert grade_one(text, gold).correct is correct


def test_no_answer_part_is_wrong():
    assert grade_one(None, "1").correct is False
    assert candidate(None) is None and candidate("   ") is None
    assert candidate("<answer> 52 </answer>", "r1zero") == "52"
    # R1-Zero without <answer>: no answer, as the reward says (issue 15: eval used to grade the text)
    assert candidate("The answer is 7.", "r1zero") is None
    assert grade_one("The answer is 7.", "7", "r1zero").correct is False


def test_split_output():
    assert split_output("a</think>\\boxed{1}", in_think=True) == ("a", "\\boxed{1}")
    assert split_output("still thinking", in_think=True) == ("still thinking", None)
    assert split_output("\\boxed{1}", in_think=False) == ("", "\\boxed{1}")  # not a thinker
    assert split_output("<think>x</think> y", in_think=False) == ("x", "y")


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout=2, inline_below=0) as g:  # always the worker pool
        yield g


def test_grader_batch(grader):
    items = [
        ("\\boxed{x^2+2x+1}", "(x+1)^2"),
        ("\\boxed{7}", "7"),
        (None, "3"),
        ("\\boxed{2}", "3"),
    ]
    got = grader.grade(items)
    assert [x.correct for x in got] == [True, True, False, False]
    assert got[0].key == "x**2+2*x+1" and got[2].parsed is None


def test_timeout_in_a_thread_and_in_workers(grader):
    """A pathological answer times out per answer, off the main thread too, and the rest of the
    batch is still graded."""
    items = [("\\boxed{9^{9^{9^{9}}}}", "5"), ("\\boxed{\\frac{1}{2}}", "0.5")]
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", grader.grade(items)))
    t0 = time.time()
    t.start()
    t.join(60)
    assert time.time() - t0 < 30
    slow, fine = box["r"]
    assert slow.timed_out and not slow.correct
    assert fine.correct and not fine.timed_out
    # on the main thread, in-process (workers=0): the same per-answer timer
    slow2, _ = Grader(timeout=1, workers=0).grade(items)
    assert slow2.timed_out


def stuck_task(text, gold, timeout, template):
    """Stands for an answer stuck where no signal reaches: the alarm is blocked."""
    if "stuck" in text:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return grade_timed(text, gold, timeout, template)


class StuckGrader(Grader):
    task = staticmethod(stuck_task)


def test_hard_deadline_replaces_a_stuck_worker():
    items = [("\\boxed{\\frac{2}{4}}", "0.5"), ("\\boxed{stuck}", "1"), ("\\boxed{y+1}", "1+y")]
    with StuckGrader(timeout=1, workers=1, hard_timeout=2, inline_below=0) as g:
        t0 = time.time()
        got = g.grade(items)
    assert time.time() - t0 < 30
    assert [x.correct for x in got] == [True, False, True]
    assert got[1].timed_out


def test_majority_vote_ties_break_by_first_occurrence():
    # two classes with two votes each: "5" first appears at sample 0, the correct one at 1
    assert majority_vote([("5", False), ("7", True), ("5", False), ("7", True)]) == 0
    assert majority_vote([("7", True), ("5", False), ("5", False), ("7", True)]) == 0
    # correct answers pool whatever their written form; wrong ones split by key
    assert majority_vote([("a", False), ("b", False), ("1/2", True), ("0.5", True)]) == 2
    # no answers do not vote; nothing at all: None
    assert majority_vote([(None, False), (None, False), ("3", False)]) == 2
    assert majority_vote([(None, False)]) is None


def test_cons_at_k():
    votes = [
        [("18", True), ("18", True), ("17", False)],  # right by majority
        [("5", False), ("5", False), ("3", True)],  # wrong by majority
        [("1", False), ("3", True), ("2", False)],  # three-way tie: sample 0 wins, wrong
        [(None, False), (None, False), ("3", True)],  # the only answer is right
    ]
    assert cons_at_k(votes) == pytest.approx(2 / 4)
    assert cons_at_k([]) == 0.0


@pytest.mark.parametrize("n, c, k", [(4, 1, 2), (16, 5, 8), (64, 3, 16), (64, 60, 64)])
def test_pass_at_k_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    s = summarize([[True] * c + [False] * (n - c)], k)
    assert s["passk"] == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
