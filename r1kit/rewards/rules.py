"""The rule-checked rewards of R1-Zero: accuracy and format."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from r1kit import grading
from r1kit.chat import split_reasoning
from r1kit.data.tasks import TASKS
from r1kit.grading import Grade
from r1kit.rewards.base import register
from r1kit.rewards.code import CODE

# R1-Zero: reasoning, </think>, then exactly one <answer>...</answer> and nothing after it
_R1ZERO_FORMAT = re.compile(
    r"^(?:\s*<think>)?(?!.*<think>).+?</think>\s*<answer>(?:(?!<answer>).)+?</answer>\s*$", re.S
)


def answer_of(completion: str, example: Mapping[str, Any]) -> str | None:
    """The final answer the completion gives, extracted by `r1kit.grading`'s rule."""
    return grading.answer_of(completion, example.get("template", "r1zero"))


def grade_example(content: str | None, example: Mapping[str, Any], template: str) -> Grade:
    """The grade of a completion's answer part (the text after `</think>`; None without one) for
    a dataset row: the row's task checker (`r1kit.data.tasks`) on the answer `r1kit.grading`
    extracts, else `r1kit.grading.grade` against its "answer" field. The accuracy reward and
    `r1kit eval` (for rows of a procedural task) both call this."""
    if example.get("tests"):  # a programming problem: its tests run in the sandbox
        program, ok = CODE.grade(content, example, template)
        return Grade(program, None, ok)
    task = TASKS.get(example.get("task", ""))
    if task is not None:
        try:
            pred = grading.extract(content, template)
        except Exception:  # math-verify failing on odd input: nothing was found
            pred = None
        ok = pred is not None and bool(task.check(pred, example))
        return Grade(pred, None if pred is None else re.sub(r"\s+", "", pred), ok)
    gold = example.get("answer")
    if gold is None:
        return Grade(None, None, False)
    return grading.grade(content, str(gold), template)


@register("accuracy")
def accuracy(completion: str, example: Mapping[str, Any]) -> float:
    """1 when the final answer is right, graded as `r1kit eval` grades it (`grade_example`)."""
    _, content = split_reasoning(completion)
    return float(grade_example(content, example, example.get("template", "r1zero")).correct)


accuracy.prepare = CODE.prepare  # a batch's programs run in the sandbox in parallel first


@register("format")
def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 when reasoning sits inside the think block and the answer is where the template wants
    it: `<answer>...</answer>` after `</think>` (r1zero), or a `\\boxed{}` after it (chat)."""
    if example.get("template", "r1zero") == "chat":
        reasoning, content = split_reasoning(completion)
        return float(bool(reasoning) and content is not None and "\\boxed" in content)
    return float(bool(_R1ZERO_FORMAT.match(completion)))
