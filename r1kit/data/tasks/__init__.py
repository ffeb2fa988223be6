"""Procedural, rule-checked reasoning tasks with disjoint train / held-out splits."""

from __future__ import annotations

from r1kit.data.tasks import arith, countdown, linear
from r1kit.data.tasks.base import STYLES, Example, Task, split_of, stream

TASKS: dict[str, Task] = {t.name: t for t in (arith.TASK, linear.TASK, countdown.TASK)}

__all__ = ["STYLES", "TASKS", "Example", "Task", "split_of", "stream"]
