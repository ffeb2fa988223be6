"""Equality of math answers: a fast exact path for plain numbers, `math-verify` for the rest.

math-verify's own timeout uses SIGALRM, which only works in the main thread; off the main thread
we call it with its timeout disabled (our answers are short, so parsing stays cheap).
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

_NUM = re.compile(r"^[-+]?\d+(?:\.\d+)?(?:/\d+)?$")
_LHS = re.compile(r"^[a-zA-Z]\s*=\s*")


def as_fraction(text: str) -> Fraction | None:
    t = _LHS.sub("", text.strip().rstrip(".").replace(",", "").replace(" ", ""))
    if not _NUM.match(t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def delimited(text: str) -> str:
    """math-verify looks for math inside delimiters; bare LaTeX or plain text gets `$...$`.
    An escaped dollar (`\\$18.90`, a currency sign) is dropped, not taken for a delimiter."""
    text = text.replace("\\$", "")
    return text if any(d in text for d in ("$", "\\(", "\\[", "\\boxed")) else f"${text}$"


def math_equal(pred: str | None, gold: str) -> bool:
    """True when `pred` states the same value as `gold` (numbers, fractions, LaTeX)."""
    if pred is None or not pred.strip():
        return False
    a, b = as_fraction(pred), as_fraction(gold)
    if a is not None and b is not None:
        return a == b
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    kw = {} if main else {"parsing_timeout": None}
    vkw = {} if main else {"timeout_seconds": None}
    try:
        gold_p = parse(delimited(gold), **kw)
        pred_p = parse(delimited(pred), **kw)
        return bool(gold_p and pred_p and verify(gold_p, pred_p, **vkw))
    except Exception:  # math-verify raises on odd input; an unparseable answer is just wrong
        return False
