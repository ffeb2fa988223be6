"""pass@k (unbiased estimator) and the evaluation summary."""

from __future__ import annotations

import math

import pytest

from r1kit.sampling.metrics import mean_stderr, pass_at_k, summarize


def closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


GRID = [(n, c, k) for n in (1, 2, 3, 5, 8, 16, 64) for c in range(n + 1) for k in range(1, n + 1)]


@pytest.mark.parametrize(
    "n, c, k", [(2, 1, 1), (5, 2, 2), (8, 3, 4), (16, 1, 8), (16, 15, 1), (64, 5, 10), (64, 0, 3)]
)
def test_pass_at_k_matches_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), abs=1e-12)


def test_pass_at_k_full_grid():
    for n, c, k in GRID:
        got = pass_at_k(n, c, k)
        assert 0.0 <= got <= 1.0
        assert got == pytest.approx(closed_form(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_1_is_fraction_correct():
    for n in (1, 4, 10, 200):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(10, 0, 5) == 0.0  # nothing right
    assert pass_at_k(10, 10, 1) == 1.0  # everything right
    assert pass_at_k(10, 1, 10) == 1.0  # k = n sees every sample
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k: any k draws include a right one
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    # monotone in k and in c
    assert pass_at_k(20, 3, 1) < pass_at_k(20, 3, 2) < pass_at_k(20, 3, 8)
    assert pass_at_k(20, 2, 4) < pass_at_k(20, 3, 4)
    # large n stays finite and accurate (no huge binomials)
    assert pass_at_k(1000, 10, 100) == pytest.approx(closed_form(1000, 10, 100), rel=1e-9)


@pytest.mark.parametrize("n, c, k", [(5, 1, 0), (5, 1, 6), (5, 6, 1), (5, -1, 1), (0, 0, 1)])
def test_pass_at_k_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_stderr():
    assert mean_stderr([]) == (0.0, 0.0)
    assert mean_stderr([0.3]) == (0.3, 0.0)
    m, se = mean_stderr([0.0, 1.0, 1.0, 0.0])
    assert m == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))


def test_summarize():
    correct = [[True, False], [True, True], [False, False], [False, True]]
    s = summarize(correct, k=2)
    per = [0.5, 1.0, 0.0, 0.5]
    assert s["pass1"] == pytest.approx(sum(per) / 4)
    mean = sum(per) / 4
    var = sum((p - mean) ** 2 for p in per) / 3
    assert s["pass1_stderr"] == pytest.approx(math.sqrt(var / 4))
    assert s["passk"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert s["k"] == 2


def test_summarize_unequal_samples_and_large_k():
    correct = [[True, False, False, False], [False], [True, True, False]]
    s = summarize(correct, k=8)  # k is clamped to each problem's sample count
    assert s["passk"] == pytest.approx(2 / 3)
    assert s["pass1"] == pytest.approx((0.25 + 0.0 + 2 / 3) / 3)
    s2 = summarize(correct, k=2)
    expected = (closed_form(4, 1, 2) + 0.0 + closed_form(3, 2, 2)) / 3
    assert s2["passk"] == pytest.approx(expected)
    one = summarize([[True, False, True, True]], k=1)
    assert one["pass1"] == one["passk"] == pytest.approx(0.75)
    assert one["pass1_stderr"] == 0.0


def test_summarize_empty():
    s = summarize([], k=4)
    assert s["pass1"] == 0.0 and s["passk"] == 0.0 and s["pass1_stderr"] == 0.0
