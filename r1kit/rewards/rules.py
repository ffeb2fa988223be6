"""The rule-checked rewards of R1-Zero: accuracy and format."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from r1kit.chat import extract_answer, split_reasoning
from r1kit.rewards.base import register
from r1kit.rewards.math_grader import math_equal

# R1-Zero: reasoning, </think>, then exactly one <answer>...</answer> and nothing after it
_R1ZERO_FORMAT = re.compile(
    r"^(?:\s*<think>)?(?!.*<think>).+?</think>\s*<answer>(?:(?!<answer>).)+?</answer>\s*$", re.S
)


def answer_of(completion: str, example: Mapping[str, Any]) -> str | None:
    """The final answer the completion gives, parsed as its template prescribes."""
    _, content = split_reasoning(completion)
    return extract_answer(content, example.get("template", "r1zero"))


@register("accuracy")
def accuracy(completion: str, example: Mapping[str, Any]) -> float:
    """1 when the final answer is right: the task's checker, else math-verify against "answer"."""
    from r1kit.data.tasks import TASKS

    pred = answer_of(completion, example)
    task = TASKS.get(example.get("task", ""))
    if task is not None:
        return float(task.check(pred, example))
    gold = example.get("answer")
    return float(gold is not None and math_equal(pred, str(gold)))


@register("format")
def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 when reasoning sits inside the think block and the answer is where the template wants
    it: `<answer>...</answer>` after `</think>` (r1zero), or a `\\boxed{}` after it (chat)."""
    if example.get("template", "r1zero") == "chat":
        reasoning, content = split_reasoning(completion)
        return float(bool(reasoning) and content is not None and "\\boxed" in content)
    return float(bool(_R1ZERO_FORMAT.match(completion)))
