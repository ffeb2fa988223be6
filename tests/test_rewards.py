"""Rule-checked rewards, the math grader, the registry, weighted sums and plugins."""

from __future__ import annotations

import random
import threading

import pytest

from r1kit.data.tasks import TASKS
from r1kit.errors import R1kitError
from r1kit.rewards import REGISTRY, WeightedReward, get_reward, parse_reward_spec
from r1kit.rewards.math_grader import math_equal
from r1kit.rewards.rules import accuracy, format_reward


def r1zero(reasoning: str, answer: str) -> str:
    """A well-formed R1-Zero completion (it continues after the prompt's <think>)."""
    return f" {reasoning} </think> <answer> {answer} </answer>"


def chat(reasoning: str, answer: str) -> str:
    return f"{reasoning}\n</think>\n\nThe answer is \\boxed{{{answer}}}."


def example(name: str, seed: int = 0) -> dict:
    return TASKS[name].generate(random.Random(seed))


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", ["arith", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_numeric_tasks(name, seed):
    ex = example(name, seed)
    gold = ex["answer"]
    wrong = str(int(gold) + 1)
    assert accuracy(r1zero("work", gold), ex) == 1.0
    assert accuracy(r1zero("work", wrong), ex) == 0.0
    assert accuracy(f" work </think>\n<answer>{gold}</answer>", ex) == 1.0
    # the answer must be inside the tags, after </think>
    assert accuracy(f" work </think> The answer is {gold}.", ex) == 0.0
    assert accuracy(f" work <answer> {gold} </answer>", ex) == 0.0  # never closed the think block
    assert accuracy("", ex) == 0.0
    # the chat template reads \boxed{}
    cex = {**ex, "template": "chat"}
    assert accuracy(chat("work", gold), cex) == 1.0
    assert accuracy(chat("work", wrong), cex) == 0.0
    # no \boxed{}: the expression math-verify finds, as `r1kit eval` grades (issue 15: the reward
    # used to score 0 here while eval graded the text); the format reward still asks for the box
    assert accuracy(r1zero("work", gold), cex) == 1.0
    assert format_reward(r1zero("work", gold), cex) == 0.0
    assert accuracy(r1zero("work", wrong), cex) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_countdown(seed):
    ex = example("countdown", seed)
    _, expr = TASKS["countdown"].trace(ex, random.Random(seed), "careful")
    a, b, c = ex["numbers"]
    assert accuracy(r1zero("search", expr), ex) == 1.0
    assert accuracy(r1zero("search", f"{expr} = {ex['target']}"), ex) == 1.0
    assert accuracy(chat("search", expr), {**ex, "template": "chat"}) == 1.0
    assert accuracy(r1zero("search", str(ex["target"])), ex) == 0.0  # no numbers used
    # (a + b) + c with one number changed never uses exactly the given numbers
    assert accuracy(r1zero("search", f"({a} + {b}) + {c + 100}"), ex) == 0.0
    assert accuracy(f" search </think> {expr}", ex) == 0.0


def test_accuracy_jsonl_math_without_task():
    ex = {"question": "What is 1/2?", "answer": "\\frac{1}{2}"}
    for good in ("\\frac{1}{2}", "1/2", "0.5", "\\frac{2}{4}", "$\\frac{1}{2}$"):
        assert accuracy(r1zero("half", good), ex) == 1.0, good
    for bad in ("2", "1/3", "0.49", "\\frac{1}{3}", "one half-ish"):
        assert accuracy(r1zero("half", bad), ex) == 0.0, bad
    # chat template, \boxed with nested braces
    assert accuracy(chat("half", "\\frac{1}{2}"), {**ex, "template": "chat"}) == 1.0
    # an example without an answer earns nothing
    assert accuracy(r1zero("x", "1"), {"question": "q"}) == 0.0
    # an unknown task name falls back to the answer field
    assert accuracy(r1zero("x", "7"), {"question": "q", "answer": "7", "task": "other"}) == 1.0


@pytest.mark.parametrize(
    "pred, gold, equal",
    [
        ("42", "42", True),
        ("42.0", "42", True),
        ("-3", "-3", True),
        ("x = 3", "3", True),
        ("1,000", "1000", True),
        ("3.", "3", True),
        ("1/2", "\\frac{1}{2}", True),
        ("0.5", "\\frac{1}{2}", True),
        ("0.5", "1/2", True),
        ("\\frac{2}{4}", "0.5", True),
        ("\\frac{1}{2}", "\\frac{1}{2}", True),
        ("\\boxed{5}", "5", True),
        ("(1,2)", "(1, 2)", True),
        ("43", "42", False),
        ("2", "\\frac{1}{2}", False),
        ("1/3", "0.333", False),
        ("", "1", False),
        ("   ", "1", False),
        (None, "1", False),
        ("abc", "\\frac{1}{2}", False),
        ("1/0", "1", False),
    ],
)
def test_math_equal(pred, gold, equal):
    assert math_equal(pred, gold) is equal


# Bare LaTeX (no $...$) must be wrapped before math-verify parses it.
@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\frac12", "1/2"),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("\\infty", "\\infty"),
    ],
)
def test_math_equal_bare_latex(pred, gold):
    assert math_equal(pred, gold)


# Unwrapped, math-verify's fallback would pick the bare \frac{1}{2} out of a longer expression.
@pytest.mark.parametrize("pred, gold", [("2\\frac{1}{2}", "0.5"), ("\\frac{1}{2}x", "0.5")])
def test_math_equal_bare_latex_no_false_positive(pred, gold):
    assert not math_equal(pred, gold)


def test_math_equal_off_the_main_thread():
    """math-verify's SIGALRM timeout cannot work in a worker thread; the grader must still work
    there (the trainer scores rewards in worker threads)."""
    cases = [
        ("\\frac{3}{4}", "0.75", True),
        ("0.75", "\\frac{3}{4}", True),
        ("\\frac{1}{2}", "\\frac{1}{2}", True),
        ("\\frac{1}{3}", "0.75", False),
        ("7", "7", True),
    ]
    results: dict = {}
    errors: list = []

    def work():
        try:
            for pred, gold, _ in cases:
                results[(pred, gold)] = math_equal(pred, gold)
            results["acc"] = accuracy(
                r1zero("w", "\\frac{3}{4}"), {"question": "q", "answer": "0.75"}
            )
        except BaseException as err:
            errors.append(err)

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and not errors, errors
    for pred, gold, expected in cases:
        assert results[(pred, gold)] is expected, (pred, gold)
    assert results["acc"] == 1.0


# --------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "completion, ok",
    [
        (" 2 + 2 = 4. </think> <answer> 4 </answer>", True),
        ("<think> 2 + 2 = 4. </think> <answer> 4 </answer>", True),
        (" 2 + 2 = 4.\n</think>\n<answer>4</answer>\n", True),
        (" multi\nline\nreasoning </think> <answer>\n4\n</answer>", True),
        # missing </think>
        (" 2 + 2 = 4. <answer> 4 </answer>", False),
        # text after </answer>
        (" 2 + 2 = 4. </think> <answer> 4 </answer> and more", False),
        # two answers
        (" r </think> <answer> 4 </answer> <answer> 5 </answer>", False),
        (" r </think> <answer> 4 <answer> 5 </answer>", False),
        # no answer tags / unclosed / empty
        (" r </think> The answer is 4.", False),
        (" r </think> <answer> 4", False),
        (" r </think> <answer></answer>", False),
        # no reasoning at all
        ("</think> <answer> 4 </answer>", False),
        # text between </think> and <answer>
        (" r </think> so <answer> 4 </answer>", False),
        # a second think block
        (" r </think> <think> s </think> <answer> 4 </answer>", False),
        ("", False),
    ],
)
def test_format_r1zero(completion, ok):
    assert format_reward(completion, {"question": "q", "answer": "4"}) == float(ok)
    assert format_reward(completion, {"question": "q", "answer": "4", "template": "r1zero"}) == (
        float(ok)
    )


@pytest.mark.parametrize(
    "completion, ok",
    [
        ("two and two </think> The answer is \\boxed{4}.", True),
        ("<think>\ntwo and two\n</think>\n\n\\boxed{\\frac{1}{2}}", True),
        ("two and two \\boxed{4}", False),  # no </think>
        ("two and two </think> The answer is 4.", False),  # no \boxed
        ("</think> \\boxed{4}", False),  # no reasoning
        (" r </think> <answer> 4 </answer>", False),  # r1zero tags are not the chat format
    ],
)
def test_format_chat(completion, ok):
    assert format_reward(completion, {"question": "q", "answer": "4", "template": "chat"}) == (
        float(ok)
    )


# --------------------------------------------------------------------------- registry, specs


def test_builtins_registered():
    assert get_reward("accuracy") is accuracy
    assert get_reward("format") is format_reward
    assert {"accuracy", "format"} <= set(REGISTRY)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("accuracy,format=0.5", {"accuracy": 1.0, "format": 0.5}),
        ("accuracy", {"accuracy": 1.0}),
        (" accuracy = 2 , format = -0.25 ", {"accuracy": 2.0, "format": -0.25}),
        ("accuracy=1,", {"accuracy": 1.0}),
        ("mypkg.mymod:short=0.5,accuracy", {"mypkg.mymod:short": 0.5, "accuracy": 1.0}),
        ("format=1e-1", {"format": 0.1}),
    ],
)
def test_parse_reward_spec(spec, expected):
    assert parse_reward_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", " , ", "accuracy=x", "format=", "accuracy,format=half"])
def test_parse_reward_spec_errors(spec):
    with pytest.raises(R1kitError):
        parse_reward_spec(spec)


def test_weighted_reward_sum():
    ex = example("arith", 3)
    wr = WeightedReward(parse_reward_spec("accuracy,format=0.5"))
    good = r1zero("work", ex["answer"])
    assert wr.components(good, ex) == {"accuracy": 1.0, "format": 1.0}
    assert wr(good, ex) == pytest.approx(1.5)
    # right answer, bad format: text after </answer>
    sloppy = good + " done"
    assert wr.components(sloppy, ex) == {"accuracy": 1.0, "format": 0.0}
    assert wr(sloppy, ex) == pytest.approx(1.0)
    wrong = r1zero("work", str(int(ex["answer"]) + 1))
    assert wr(wrong, ex) == pytest.approx(0.5)
    assert wr(" rambling", ex) == 0.0
    assert wr.total({"accuracy": 1.0, "format": 0.0}) == pytest.approx(1.0)


def test_unknown_reward_lists_builtins():
    with pytest.raises(R1kitError) as err:
        get_reward("nosuch")
    msg = str(err.value)
    assert "nosuch" in msg and "accuracy" in msg and "format" in msg
    with pytest.raises(R1kitError):
        WeightedReward({"accuracy": 1.0, "nosuch": 1.0})


PLUGIN = """
def short(completion, example):
    return 1.0 if len(completion) < 40 else 0.0


NOT_CALLABLE = 3
"""


def test_plugin_reward(tmp_path, monkeypatch):
    pkg = tmp_path / "r1kit_test_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "lengths.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))

    fn = get_reward("r1kit_test_plugins.lengths:short")
    assert fn.__name__ == "short" and fn("abc", {}) == 1.0

    ex = example("linear", 4)
    wr = WeightedReward(parse_reward_spec("accuracy,r1kit_test_plugins.lengths:short=0.25"))
    assert set(wr.fns) == {"accuracy", "r1kit_test_plugins.lengths:short"}
    short_right = r1zero("ok", ex["answer"])
    long_right = r1zero("a long chain of thought " * 3, ex["answer"])
    assert len(short_right) < 40 <= len(long_right)
    assert wr.components(short_right, ex) == {
        "accuracy": 1.0,
        "r1kit_test_plugins.lengths:short": 1.0,
    }
    assert wr(short_right, ex) == pytest.approx(1.25)
    assert wr(long_right, ex) == pytest.approx(1.0)

    for bad in (
        "r1kit_test_plugins.lengths:missing",
        "r1kit_test_plugins.nosuchmodule:short",
        "r1kit_test_plugins.lengths:NOT_CALLABLE",
    ):
        with pytest.raises(R1kitError, match="plugin"):
            get_reward(bad)
