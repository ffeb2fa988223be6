"""Procedural, rule-checked reasoning tasks with disjoint train / held-out splits."""

from __future__ import annotations

from r1kit.data.tasks import arith, code, countdown, linear
from r1kit.data.tasks.base import STYLES, Example, Task, split_of, stream

TASKS: dict[str, Task] = {t.name: t for t in (arith.TASK, linear.TASK, countdown.TASK, code.TASK)}
# 'mix' and the default pretraining corpus: the answer-checked tasks (code runs in the sandbox;
# name it to use it: `--dataset code` or `arith+code`)
MIX_TASKS = ("arith", "linear", "countdown")

__all__ = ["MIX_TASKS", "STYLES", "TASKS", "Example", "Task", "split_of", "stream"]
