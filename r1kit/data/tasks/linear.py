"""Linear equations: `Solve for x: 3x + 5 = 20.` solved in two steps and checked."""

from __future__ import annotations

import random

from r1kit.data.tasks.base import Example, Task, off_by
from r1kit.grading import math_equal


def generate(rng: random.Random) -> Example:
    a, x, b = rng.randint(2, 6), rng.randint(1, 12), rng.randint(1, 20)
    op = rng.choice("+-") if a * x > b else "+"
    c = a * x + b if op == "+" else a * x - b
    return {
        "task": "linear",
        "question": f"Solve for x: {a}x {op} {b} = {c}.",
        "answer": str(x),
        "a": a,
        "b": b,
        "c": c,
        "op": op,
    }


def trace(ex: Example, rng: random.Random, style: str) -> tuple[str, str]:
    a, b, c, op, x = ex["a"], ex["b"], ex["c"], ex["op"], int(ex["answer"])
    if style == "guess":
        g = x if rng.random() < 0.2 else off_by(rng, x)
        return f"x is about {g}.", str(g)
    undo, inv = ("Subtract", "-") if op == "+" else ("Add", "+")
    ax = a * x
    slip_first = rng.random() < 0.5
    ax_said = ax + a * rng.choice([-1, 1]) if style != "careful" and slip_first else ax
    step1 = f"{undo} {b} on both sides: {a}x = {c} {inv} {b} = {ax_said}."
    if style == "slip" and slip_first:
        x_said = ax_said // a
        return f"{step1} Divide by {a}: x = {ax_said} / {a} = {x_said}.", str(x_said)
    if style == "slip":
        x_said = off_by(rng, x)
        return f"{step1} Divide by {a}: x = {ax} / {a} = {x_said}.", str(x_said)
    if style == "corrected" and slip_first:
        fix = f"Wait, {c} {inv} {b} = {ax}, not {ax_said}. So {a}x = {ax}."
        return f"{step1} {fix} Divide by {a}: x = {ax} / {a} = {x}.", str(x)
    if style == "corrected":
        wrong = off_by(rng, x)
        check = f"Check: {a} * {wrong} = {a * wrong}, not {ax}. Wait, {ax} / {a} = {x}."
        return f"{step1} Divide by {a}: x = {ax} / {a} = {wrong}. {check}", str(x)
    return f"{step1} Divide by {a}: x = {ax} / {a} = {x}.", str(x)


def check(answer: str | None, ex: Example) -> bool:
    return math_equal(answer, ex["answer"])


TASK = Task("linear", generate, check, trace)
