"""Code: write `f(xs)` for a described list transformation, checked by hidden tests in the sandbox.

A problem composes up to three steps over a list of integers: keep some elements (greater or
less than K, even, odd), change each (add, subtract, multiply by K), and return the list, its
sum or its count, e.g.

    Write f(xs): keep the elements greater than 3, add 2 to each, return the sum.
    def f(xs): return sum(x + 2 for x in xs if x > 3)

The hidden tests call f on fixed lists and check the result type-strictly (`type(r) is int and
r == 16`), so an object whose `__eq__` always says True earns nothing. The worked trace names
each step's code, writes the function and checks it on a small list; slips pick a wrong
constant or comparison.
"""

from __future__ import annotations

import random

from r1kit.chat import code_in
from r1kit.data.tasks.base import Example, Task
from r1kit.sandbox import shared

# (question words, condition) ; K is filled in
_FILTERS = {
    "gt": ("keep the elements greater than {k}", "x > {k}"),
    "lt": ("keep the elements less than {k}", "x < {k}"),
    "ge": ("keep the elements at least {k}", "x >= {k}"),
    "le": ("keep the elements at most {k}", "x <= {k}"),
    "even": ("keep the even elements", "x % 2 == 0"),
    "odd": ("keep the odd elements", "x % 2 == 1"),
}
_MAPS = {
    "add": ("add {k} to each", "x + {k}"),
    "sub": ("subtract {k} from each", "x - {k}"),
    "mul": ("multiply each by {k}", "x * {k}"),
    "square": ("square each", "x * x"),
}
_COMPARE = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}  # a slip flips the comparison
_RESULTS = {"list": "return the list", "sum": "return the sum", "count": "return the count"}
# the inputs the hidden tests call f on
_TEST_LISTS = ([3, 8, 1, 6], [5, 2, 9, 4, 7], [], [10, 0, 7])
_CHECK = [1, 4, 7]  # the trace's worked check


def _step(kind: str, k: int | None, table: dict) -> tuple[str, str] | None:
    if kind == "none":
        return None
    words, code = table[kind]
    return words.format(k=k), code.format(k=k)


def _parts(ex: Example) -> tuple[tuple | None, tuple | None, str]:
    flt = _step(ex["filter"], ex["fk"], _FILTERS)
    mp = _step(ex["map"], ex["mk"], _MAPS)
    return flt, mp, ex["result"]


def solution(flt: str | None, mp: str | None, result: str) -> str:
    """The one-line function: `def f(xs): return ...` from a condition and an element map."""
    elem = mp or "x"
    cond = f" if {flt}" if flt else ""
    if result == "list":
        body = f"[{elem} for x in xs{cond}]"
    elif result == "sum":
        body = f"sum({elem} for x in xs{cond})"
    else:
        body = f"len([x for x in xs{cond}])"
    return f"def f(xs): return {body}"


def _run(code: str, xs: list[int]) -> int | list[int]:
    """Reference value of a generated solution: it is ours, never model output."""
    ns: dict = {}
    exec(code, ns)  # our own generated one-liner
    return ns["f"](list(xs))


def generate(rng: random.Random) -> Example:
    while True:
        result = rng.choice(list(_RESULTS))
        flt = rng.choice(["none", *_FILTERS])
        mp = "none" if result == "count" else rng.choice(["none", *_MAPS])
        if flt == "none" and mp == "none":
            continue
        break
    fk = rng.randint(0, 9) if flt in _COMPARE else None
    mk = rng.randint(2, 6) if mp == "mul" else rng.randint(1, 9) if mp in ("add", "sub") else None
    ex: Example = {"task": "code", "filter": flt, "fk": fk, "map": mp, "mk": mk, "result": result}
    f, m, _ = _parts(ex)
    steps = [s[0] for s in (f, m) if s] + [_RESULTS[result]]
    code = solution(f and f[1], m and m[1], result)
    kind = "list" if result == "list" else "int"
    tests = []
    for xs in _TEST_LISTS:
        want = _run(code, xs)
        tests.append(f"r = f({xs})\nassert type(r) is {kind} and r == {want!r}")
    ex.update(
        question=f"Write f(xs) for a list of integers xs: {', '.join(steps)}.",
        answer=code,
        tests=tests,
        entry_point="f",
    )
    return ex


def _slip(rng: random.Random, ex: Example) -> Example:
    """The same problem with one step wrong: another constant or the opposite comparison."""
    wrong = dict(ex)
    options = []
    if ex["fk"] is not None:
        options.append(("fk", ex["fk"] + rng.choice([-1, 1])))
        options.append(("filter", _COMPARE[ex["filter"]]))
    if ex["filter"] in ("even", "odd"):
        options.append(("filter", "odd" if ex["filter"] == "even" else "even"))
    if ex["mk"] is not None:
        options.append(("mk", ex["mk"] + rng.choice([-1, 1]) if ex["mk"] > 2 else ex["mk"] + 1))
    if ex["map"] in ("add", "sub"):
        options.append(("map", "sub" if ex["map"] == "add" else "add"))
    if ex["map"] == "square":
        options.append(("map", "mul"))
        wrong["mk"] = 2
    if not options:  # a count of everything else: count the opposite parity
        options.append(("result", "sum"))
    key, value = rng.choice(options)
    wrong[key] = value
    return wrong


def _working(ex: Example) -> tuple[list[str], str]:
    """Reasoning lines naming each step's code, and the function."""
    flt, mp, result = _parts(ex)
    lines = []
    if flt:
        lines.append(f"Keep: {flt[1]}.")
    if mp:
        lines.append(f"Each: {mp[1]}.")
    lines.append(f"Return the {result}.")
    return lines, solution(flt and flt[1], mp and mp[1], result)


def trace(ex: Example, rng: random.Random, style: str) -> tuple[str, str]:
    if style == "guess":
        code = _working(ex if rng.random() < 0.25 else _slip(rng, ex))[1]
        return "Maybe this.", code
    said = _slip(rng, ex) if style in ("slip", "corrected") else ex
    lines, code = _working(said)
    if style == "corrected":
        right_lines, code = _working(ex)
        bad, fix = next((w, r) for w, r in zip(lines, right_lines) if w != r)
        lines.append(f"Wait, the task says {_step_words(ex, fix)}: {_code(fix)}, not {_code(bad)}.")
    check = _run(code, _CHECK)
    lines.append(f"Check f({_CHECK}) = {check}.")
    return " ".join(lines), code


def _code(line: str) -> str:
    """'Keep: x > 3.' -> 'x > 3'."""
    return line.partition(": ")[2].rstrip(".") or line.rstrip(".")


def _step_words(ex: Example, line: str) -> str:
    flt, mp, _ = _parts(ex)
    if flt and line.startswith("Keep"):
        return flt[0]
    if mp and line.startswith("Each"):
        return mp[0]
    return _RESULTS[ex["result"]]


def check(answer: str | None, ex: Example) -> bool:
    """The answer (the code inside <answer>, or a fenced block there) passes every hidden test."""
    if not answer:
        return False
    code = code_in(answer, "chat") or answer
    res = shared().run(code, tuple(ex["tests"]))
    return bool(res and res.all_passed)


TASK = Task("code", generate, check, trace)
