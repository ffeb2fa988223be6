"""pass@k (Chen et al. 2021, unbiased), pass@1 as the mean over samples, with standard errors."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k draws without replacement from n samples, c correct, is correct)
    = 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"need 0 < k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def summarize(correct: Sequence[Sequence[bool]], k: int) -> dict[str, float]:
    """correct[p][s]: sample s of problem p was right. pass@1 is the per-problem mean over its
    samples, averaged over problems (standard error across problems); pass@k is unbiased."""
    per_problem = [sum(c) / len(c) for c in correct]
    p1, se = mean_stderr(per_problem)
    pk = sum(pass_at_k(len(c), sum(c), min(k, len(c))) for c in correct) / max(1, len(correct))
    return {"pass1": p1, "pass1_stderr": se, "passk": pk, "k": k}


def majority_vote(votes: Sequence[tuple[str | None, bool]]) -> int | None:
    """Index of the sample whose answer wins the vote, or None when no sample gave an answer.

    votes[s] = (answer key, graded correct). Samples graded correct all equal the gold answer, so
    they form one class whatever their written form; the others are grouped by their key (a
    canonical form of the parsed answer). Samples without an answer (key None) do not vote.
    Ties are broken deterministically by first occurrence: of the classes with the most votes,
    the one whose first sample comes earliest in sample order wins.
    """
    counts: dict[object, int] = {}
    first: dict[object, int] = {}
    for s, (key, correct) in enumerate(votes):
        if key is None and not correct:
            continue
        cls = True if correct else ("key", key)
        counts[cls] = counts.get(cls, 0) + 1
        first.setdefault(cls, s)
    if not counts:
        return None
    winner = max(counts, key=lambda c: (counts[c], -first[c]))
    return first[winner]


def cons_at_k(votes: Sequence[Sequence[tuple[str | None, bool]]]) -> float:
    """cons@k (R1 paper): the share of problems whose majority-vote answer is correct."""
    if not votes:
        return 0.0
    right = 0
    for problem in votes:
        w = majority_vote(problem)
        right += w is not None and problem[w][1]
    return right / len(votes)
