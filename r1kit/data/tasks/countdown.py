"""Countdown: reach a target from three numbers with + - *, each number used once.

The worked trace is a search: try an expression, compute it step by step, keep or reject it.
"""

from __future__ import annotations

import ast
import itertools
import random
from collections import Counter

from r1kit.data.tasks.base import Example, Task

OPS = "+-*"


def _ap(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _candidates(nums: list[int]) -> list[tuple[int, str, int, str, int, int, int]]:
    """Every (a op1 b) op2 c over orderings, with intermediates kept in 0..60."""
    out = []
    for a, b, c in itertools.permutations(nums):
        for o1, o2 in itertools.product(OPS, OPS):
            r1 = _ap(a, o1, b)
            r2 = _ap(r1, o2, c)
            if 0 <= r1 <= 60 and 0 <= r2 <= 60:
                out.append((a, o1, b, o2, c, r1, r2))
    return out


def generate(rng: random.Random) -> Example:
    while True:
        nums = [rng.randint(1, 9) for _ in range(3)]
        target = rng.choice(_candidates(nums))[-1]
        if target >= 3:
            break
    q = f"Use the numbers {', '.join(map(str, nums))} to make {target} with + - * (each number once)."
    return {"task": "countdown", "question": q, "answer": None, "numbers": nums, "target": target}


def _expr(c: tuple) -> str:
    a, o1, b, o2, cc = c[:5]
    return f"({a} {o1} {b}) {o2} {cc}"


def _attempt(c: tuple, claimed: int | None = None, verdict: str = "") -> str:
    a, o1, b, o2, cc, r1, r2 = c
    return f"Try {_expr(c)}: {a} {o1} {b} = {r1}, {r1} {o2} {cc} = {r2 if claimed is None else claimed}. {verdict}"


def trace(ex: Example, rng: random.Random, style: str) -> tuple[str, str]:
    cands = _candidates(ex["numbers"])
    target = ex["target"]
    good = [c for c in cands if c[-1] == target]
    bad = [c for c in cands if c[-1] != target]
    if style == "guess":
        c = rng.choice(good if rng.random() < 0.25 or not bad else bad)
        return f"Maybe {_expr(c)}.", _expr(c)
    lines = [_attempt(c, verdict="No.") for c in rng.sample(bad, min(len(bad), rng.randint(0, 2)))]
    sol = rng.choice(good)
    if style in ("slip", "corrected") and bad:
        wrong = rng.choice(bad)
        lines.append(_attempt(wrong, claimed=target, verdict="Yes." if style == "slip" else ""))
        if style == "slip":
            return " ".join(lines).strip(), _expr(wrong)
        lines[-1] += (
            f"Wait, let me check: {wrong[5]} {wrong[3]} {wrong[4]} = {wrong[6]}, not {target}. No."
        )
    lines.append(_attempt(sol, verdict="Yes."))
    return " ".join(lines).strip(), _expr(sol)


def _eval(node: ast.AST) -> int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
        a, b = _eval(node.left), _eval(node.right)
        return (
            a + b
            if isinstance(node.op, ast.Add)
            else a - b
            if isinstance(node.op, ast.Sub)
            else a * b
        )
    raise ValueError("only integers, + - * and parentheses are allowed")


def _numbers(node: ast.AST) -> list[int]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]


def check(answer: str | None, ex: Example) -> bool:
    """The expression uses exactly the given numbers and evaluates to the target."""
    if not answer or len(answer) > 200:
        return False
    expr = answer.split("=")[0].strip()
    try:
        tree = ast.parse(expr, mode="eval")
        ok_numbers = Counter(_numbers(tree)) == Counter(ex["numbers"])
        return ok_numbers and _eval(tree) == ex["target"]
    except (SyntaxError, ValueError, RecursionError):
        return False


TASK = Task("countdown", generate, check, trace)
