"""THE grader: whether a completion's answer is right. The accuracy reward (training), `r1kit eval`
and every held-out evaluation (`zero`, `sft`, `pipeline`) call it, so one answer gets one grade
everywhere.

What is graded. The answer part is the text after the first `</think>` (`chat.split_reasoning`);
without `</think>` the reasoning never ended: no answer, wrong. Then, by the prompt format:

- R1-Zero (`template == "r1zero"`): the text inside the first `<answer>...</answer>` of the answer
  part (a `\\boxed{}` inside it is unwrapped). No `<answer>`, or an empty one: no answer, wrong.
- chat: the last `\\boxed{}` of the answer part. Without one, the expression math-verify extracts
  from the answer part (its order: a stated "final answer is ..." first, then the rightmost LaTeX
  or plain expression); nothing found: no answer, wrong.

A procedural task (`r1kit.data.tasks`) checks that same extracted text with its own checker; any
other answer is compared with the gold answer by `compare`:

1. Both plain numbers (`42`, `-3.5`, `7/8`, `025`, `6.02e23`, `x = 3`, thousands separators only in
   groups of three: `1,000`, `12,345,678`): exact rational comparison. Any other comma makes a
   list (`3, 2`), never a number, so `12` is not `1, 2`.
2. Otherwise math-verify, the engine of equality: scientific notation is written as LaTeX
   (`6.02e23` -> `6.02\\times 10^{23}`), a text without math delimiters is put in `$...$` (an
   escaped dollar `\\$` is a currency sign and dropped), both sides are parsed and verified:
   sets and unordered lists as sets (`3, 2` = `2, 3`), tuples and intervals in order with their
   open/closed ends, matrices entry by entry, `\\dfrac` = `\\frac`, `50\\%` = `50` = `0.5`,
   `30^\\circ` = `30`, units in `\\text{}` dropped, `(C)` = `C`, `\\text{Monday}` = `Monday`,
   `2\\sqrt{3}` = `\\sqrt{12}`.
3. Where math-verify cannot parse one side, identical text (whitespace aside) still counts.

math-verify's own timeouts use SIGALRM, which works only on a process's main thread and clashes
with any other timer: they are used on the main thread when no interval timer is running (the
reward in a training loop), and left off elsewhere: off the main thread (short answers parse
quickly), and where a caller times each answer itself (`r1kit eval`'s workers, `eval.scoring`).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction

from r1kit.chat import extract_answer, last_boxed, split_reasoning

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUM = re.compile(rf"^[-+]?{_NUMBER}(?:/\d+)?$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LHS = re.compile(r"^[a-zA-Z]\s*=\s*")
# 6.02e23, 1.5E-3: a mantissa and an exponent, not part of a word or a longer number
_SCI = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")


@dataclass
class Grade:
    parsed: str | None  # the answer as read from the sample; None when it gave none
    key: str | None  # canonical form of that answer, for majority voting (cons@k)
    correct: bool
    timed_out: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def as_fraction(text: str) -> Fraction | None:
    """The exact value of a plain number (see rule 1 above), else None."""
    t = _LHS.sub("", text.strip().rstrip(".").replace("{,}", ",").replace(",\\!", ","))
    if _THOUSANDS.match(t):
        t = t.replace(",", "")
    if not _NUM.match(t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def delimited(text: str) -> str:
    """math-verify looks for math inside delimiters; bare LaTeX or plain text gets `$...$`.
    An escaped dollar (`\\$18.90`, a currency sign) is dropped, not taken for a delimiter;
    scientific notation becomes LaTeX (math-verify reads `6.02e23` as 6.02 * e * 23)."""
    text = _SCI.sub(r"\1\\times 10^{\2}", text.replace("\\$", ""))
    return text if any(d in text for d in ("$", "\\(", "\\[", "\\boxed")) else f"${text}$"


def load_math_verify() -> None:
    """Import math-verify and quiet its warning that its own timeouts are off (callers that turn
    them off time each answer themselves, or run where SIGALRM cannot)."""
    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)


def _mv_kwargs() -> tuple[dict, dict]:
    """parse() and verify() keyword arguments: math-verify's own timers where they can work (the
    main thread, no timer of the caller's running), else none."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getitimer(signal.ITIMER_REAL)[0] == 0:
        return {}, {}
    return {"parsing_timeout": None}, {"timeout_seconds": None}


def last_expression(text: str) -> str | None:
    """The expression math-verify extracts from free text (the text it matched), or None."""
    load_math_verify()
    from math_verify import parse

    pkw, _ = _mv_kwargs()
    try:
        found = parse(text, **pkw)
    except Exception:  # math-verify raises on odd input: then nothing was found
        return None
    matched = str(found[1]).strip() if len(found) > 1 else ""
    return matched or None


def extract(content: str | None, template: str = "chat") -> str | None:
    """The answer to grade from a completion's answer part (the text after `</think>`; None when
    there was no `</think>`), by the rule in this module's docstring."""
    if content is None or not content.strip():
        return None
    if template == "r1zero":
        inner = extract_answer(content, "r1zero")
        if not inner:
            return None
        boxed = last_boxed(inner)
        return boxed if boxed is not None else inner
    boxed = last_boxed(content)
    return boxed if boxed is not None else last_expression(content)


def answer_of(completion: str, template: str = "r1zero") -> str | None:
    """The answer to grade from a whole completion (reasoning, `</think>`, answer part)."""
    return extract(split_reasoning(completion)[1], template)


def quick(pred: str | None, gold: str) -> Grade | None:
    """The grade of an extracted answer when no math-verify is needed: no answer, or both sides
    plain numbers. None otherwise."""
    if pred is None or not pred.strip():
        return Grade(None, None, False)
    a, b = as_fraction(pred), as_fraction(gold)
    if a is None or b is None:
        return None
    return Grade(pred, str(a), a == b)


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text)


def compare(pred: str | None, gold: str) -> Grade:
    """Grade an extracted answer against the gold answer (rules 1-3 in the module docstring)."""
    fast = quick(pred, gold)
    if fast is not None:
        return fast
    assert pred is not None
    load_math_verify()
    from math_verify import parse, verify

    pkw, vkw = _mv_kwargs()
    gold_p = parse(delimited(gold), **pkw)
    pred_p = parse(delimited(pred), **pkw)
    correct = bool(gold_p and pred_p and verify(gold_p, pred_p, **vkw))
    if not correct and not (gold_p and pred_p):
        correct = _norm(pred) == _norm(gold)
    key = _norm(str(pred_p[0])) if pred_p else _norm(pred)
    return Grade(pred, key, correct)


def grade(content: str | None, gold: str, template: str = "chat") -> Grade:
    """Grade a completion's answer part (the text after `</think>`, None without it)."""
    try:
        pred = extract(content, template)
    except Exception:  # math-verify failing on odd input: nothing was found
        return Grade(None, None, False)
    try:
        return compare(pred, gold)
    except Exception:  # math-verify or sympy failing on odd input: the answer is wrong
        return Grade(pred, None, False)


def grade_completion(completion: str, gold: str, template: str = "r1zero") -> Grade:
    """Grade a whole completion (reasoning, `</think>`, answer part)."""
    return grade(split_reasoning(completion)[1], gold, template)


def math_equal(pred: str | None, gold: str) -> bool:
    """True when the extracted answer `pred` states the same value as `gold`."""
    try:
        return compare(pred, gold).correct
    except Exception:  # an unparseable answer is just wrong
        return False
