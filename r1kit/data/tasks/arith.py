"""Multi-step arithmetic: `Compute 37 + 48 - 19.` worked one operation at a time."""

from __future__ import annotations

import random

from r1kit.data.tasks.base import Example, Task, off_by
from r1kit.grading import math_equal


def generate(rng: random.Random) -> Example:
    # small operands and results below 100: a tiny model can learn the facts it needs
    n_ops = rng.choice([2, 3])
    value = rng.randint(2, 40)
    terms, ops = [value], []
    for _ in range(n_ops):
        op = rng.choice("+-") if 1 < value < 90 else "-" if value >= 90 else "+"
        x = rng.randint(1, min(30, 99 - value)) if op == "+" else rng.randint(1, min(value, 30))
        value = value + x if op == "+" else value - x
        terms.append(x)
        ops.append(op)
    expr = str(terms[0]) + "".join(f" {o} {t}" for o, t in zip(ops, terms[1:]))
    return {
        "task": "arith",
        "question": f"Compute {expr}.",
        "answer": str(value),
        "terms": terms,
        "ops": ops,
    }


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def trace(ex: Example, rng: random.Random, style: str) -> tuple[str, str]:
    terms, ops = ex["terms"], ex["ops"]
    if style == "guess":
        v = int(ex["answer"])
        g = v if rng.random() < 0.2 else off_by(rng, v)
        return f"This is about {g}.", str(g)
    slip_at = rng.randrange(len(ops)) if style in ("slip", "corrected") else -1
    lines, acc = [], terms[0]
    for i, (op, t) in enumerate(zip(ops, terms[1:])):
        right = _apply(acc, op, t)
        if i == slip_at:
            wrong = off_by(rng, right)
            lines.append(f"{acc} {op} {t} = {wrong}.")
            if style == "slip":
                acc = wrong
                continue
            lines.append(f"Wait, let me check: {acc} {op} {t} = {right}, not {wrong}.")
        else:
            lines.append(f"{acc} {op} {t} = {right}.")
        acc = right
    return " ".join(lines), str(acc)


def check(answer: str | None, ex: Example) -> bool:
    return math_equal(answer, ex["answer"])


TASK = Task("arith", generate, check, trace)
