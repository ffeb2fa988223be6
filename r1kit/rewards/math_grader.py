"""Equality of math answers: kept for imports; `r1kit.grading` is the one grader."""

from r1kit.grading import as_fraction, delimited, math_equal

__all__ = ["as_fraction", "delimited", "math_equal"]
