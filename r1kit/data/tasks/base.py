"""The task protocol: a generator of verifiable problems, a checker, and worked traces.

A problem is a plain dict: {"task", "question", "answer", ...task fields}. Train and held-out
splits are disjoint by construction: a problem's split is a hash of its question.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Example = dict[str, Any]
# trace(example, rng, style) -> (reasoning text, final answer text). Styles are listed in STYLES.
TraceFn = Callable[[Example, random.Random, str], tuple[str, str]]

# careful: correct steps; slip: one wrong step, wrong answer; corrected: a slip caught by a
# "wait"/check and fixed; guess: no work shown, answer often wrong.
STYLES = ("careful", "slip", "corrected", "guess")
HELDOUT_MOD = 10  # 1 problem in 10 belongs to the held-out split


@dataclass(frozen=True)
class Task:
    name: str
    generate: Callable[[random.Random], Example]
    check: Callable[[str | None, Example], bool]
    trace: TraceFn


def split_of(question: str) -> str:
    h = int.from_bytes(hashlib.sha1(question.encode()).digest()[:8], "big")
    return "test" if h % HELDOUT_MOD == 0 else "train"


def stream(task: Task, split: str, seed: int, unique: bool = False) -> Iterator[Example]:
    """Endless problems of one split, reproducible from the seed (finite when `unique` runs out)."""
    rng, seen = random.Random(seed), set()
    misses = 0
    while misses < 10_000:
        ex = task.generate(rng)
        q = ex["question"]
        if split_of(q) != split or (unique and q in seen):
            misses += 1
            continue
        misses = 0
        if unique:
            seen.add(q)
        yield ex


def off_by(rng: random.Random, value: int) -> int:
    """A plausible arithmetic slip: off by one, two or ten."""
    return value + rng.choice([-10, -2, -1, 1, 2, 10])
