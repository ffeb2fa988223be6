"""Chinese versions of the procedural tasks: `mix@zh`, `linear@zh`, `traces:mix@zh`.

The problem (numbers, answer, checker, split) is the English one; only its wording changes, and
the example gets `"language": "zh"`, the target of the language-consistency reward and of the
language-mixing filter. Worked traces are translated phrase by phrase, short phrases on purpose:
a CJK character costs the embedded model's byte-level tokenizer three tokens.

Why this exists: the embedded base was pretrained on English traces only, so on Chinese prompts
R1-Zero reasons in English words ("Subtract", "Try", "Wait") inside a Chinese conversation, the
language mixing DeepSeek-R1 (section 2.3) fixed with cold-start data and a language reward.
"""

from __future__ import annotations

import re

from r1kit.data.tasks.base import Example

LANGUAGES = ("en", "zh")

# (English pattern, Chinese replacement) for the three question templates
_QUESTIONS = [
    (re.compile(r"^Compute (.+)\.$"), r"计算 \1。"),
    (re.compile(r"^Solve for x: (.+)\.$"), r"解 x: \1。"),
    (
        re.compile(r"^Use the numbers (.+) to make (\d+) with \+ - \* \(each number once\)\.$"),
        r"用 \1 凑出 \2, 可用 + - * (每个数用一次)。",
    ),
]

# reasoning phrases, longest first so "Wait, let me check:" wins over "Wait,"
_PHRASES = [
    ("Wait, let me check:", "等等:"),
    ("Wait,", "等等,"),
    ("Check:", "检查:"),
    (" on both sides", ""),
    ("Subtract", "两边减"),
    ("Add", "两边加"),
    ("Divide by", "除以"),
    ("This is about", "大约是"),
    ("x is about", "x 大约是"),
    ("Maybe", "或"),
    ("Try", "试"),
    ("Yes.", "对."),
    ("No.", "错."),
    (", not ", ", 不是 "),
    ("So ", "所以 "),
]


def question(text: str) -> str:
    """The Chinese wording of a procedural question (unchanged when it is not one)."""
    for pat, rep in _QUESTIONS:
        if pat.match(text):
            return pat.sub(rep, text)
    return text


def reasoning(text: str, language: str = "zh") -> str:
    """A worked trace's phrases in `language` ('en': unchanged); numbers and equations stay."""
    if language == "en":
        return text
    for en, zh in _PHRASES:
        text = text.replace(en, zh)
    return text


def localize(ex: Example, language: str) -> Example:
    """The example worded in `language` ('en' returns it unchanged but tagged)."""
    if language == "en":
        return {**ex, "language": "en"}
    return {**ex, "question": question(ex["question"]), "language": language}
