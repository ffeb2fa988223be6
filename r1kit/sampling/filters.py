"""Readability filters for rejection sampling and for the held-out reports (DeepSeek-R1, 2.3.3:
"we have filtered out chain-of-thought with mixed languages, long paragraphs, and code blocks").

Each filter looks at one completion and says whether it fails; `failures` lists the names of
those that do, in FILTERS order. `incorrect` is the verifier; the rest judge readability.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from r1kit.chat import parse_completion
from r1kit.rewards.language import consistency

FILTERS = (
    "incorrect",  # the verified answer is wrong
    "no_final_answer",  # reasoning never closed, or no <answer>/\boxed{} after it
    "over_length",  # cut by the token budget
    "empty_reasoning",  # nothing inside the think block
    "language_mixing",  # reasoning's target-language word share below the threshold
    "repetition",  # a word 4-gram repeated more than max_repeats times
    "long_paragraph",  # a reasoning paragraph longer than max_paragraph_words
    "long_code_block",  # a fenced code block in the reasoning longer than max_code_lines
)
READABILITY = FILTERS[1:]
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)


@dataclass(frozen=True)
class Limits:
    language: str = "en"
    min_language: float = 0.95
    max_repeats: int = 3
    max_paragraph_words: int = 200
    max_code_lines: int = 30

    @classmethod
    def of(cls, cfg: Any) -> Limits:
        """The limits named on a job config (SampleConfig has them all)."""
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if hasattr(cfg, k)})


def max_ngram_count(text: str, n: int = 4) -> int:
    w = text.split()
    if len(w) < n:
        return 0
    return max(Counter(tuple(w[i : i + n]) for i in range(len(w) - n + 1)).values())


def failures(
    text: str,
    example: Mapping[str, Any],
    finish_reason: str = "stop",
    limits: Limits = Limits(),
    correct: bool | None = None,
) -> list[str]:
    """Names of the filters the completion fails (FILTERS order). `correct` None: not checked."""
    p = parse_completion(text, example.get("template", "r1zero"))
    reasoning = p["reasoning"] or ""
    out = []
    if correct is False:
        out.append("incorrect")
    if p["answer"] is None:
        out.append("no_final_answer")
    if finish_reason == "length":
        out.append("over_length")
    if not reasoning:
        out.append("empty_reasoning")
    lang = example.get("language", limits.language)
    if consistency(reasoning, lang) < limits.min_language:
        out.append("language_mixing")
    if max_ngram_count(reasoning) > limits.max_repeats:
        out.append("repetition")
    prose = _FENCE.sub(" ", reasoning)
    if any(len(par.split()) > limits.max_paragraph_words for par in re.split(r"\n\s*\n", prose)):
        out.append("long_paragraph")
    if any(block.count("\n") - 1 > limits.max_code_lines for block in _FENCE.findall(reasoning)):
        out.append("long_code_block")
    return out
