"""Procedural tasks, their traces and splits, JSONL loading and the pretraining corpus."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from r1kit.chat import r1zero_prompt
from r1kit.data.corpus import documents
from r1kit.data.datasets import heldout, read_jsonl, train_stream
from r1kit.data.tasks import MIX_TASKS, STYLES, TASKS, split_of, stream
from r1kit.errors import R1kitError

NAMES = sorted(MIX_TASKS)  # the code task runs in the sandbox: tests/test_code_task.py
N_PROBLEMS = 50


def problems(name: str, seed: int = 0, n: int = N_PROBLEMS) -> list[dict]:
    rng = random.Random(seed)
    return [TASKS[name].generate(rng) for _ in range(n)]


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("name", NAMES)
def test_generated_problems_are_solvable(name):
    task = TASKS[name]
    assert task.name == name
    rng = random.Random(1)
    for ex in problems(name):
        assert ex["task"] == name and isinstance(ex["question"], str) and ex["question"]
        if name == "countdown":
            _, expr = task.trace(ex, rng, "careful")
            assert task.check(expr, ex), (ex, expr)
        else:
            assert isinstance(ex["answer"], str)
            assert task.check(ex["answer"], ex), ex
            assert not task.check(str(int(ex["answer"]) + 1), ex)
        assert not task.check(None, ex)
        assert not task.check("", ex)


def test_generate_is_reproducible():
    for name in NAMES:
        assert problems(name, seed=7, n=10) == problems(name, seed=7, n=10)
        assert problems(name, seed=7, n=10) != problems(name, seed=8, n=10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("style", ["careful", "corrected"])
def test_good_traces_end_right(name, style):
    task, rng = TASKS[name], random.Random(2)
    for ex in problems(name, seed=3):
        reasoning, answer = task.trace(ex, rng, style)
        assert reasoning and task.check(answer, ex), (ex, style, reasoning, answer)
        if style == "corrected":
            assert "Wait" in reasoning


@pytest.mark.parametrize("name", NAMES)
def test_slip_traces_end_wrong(name):
    task, rng = TASKS[name], random.Random(2)
    right = []
    for ex in problems(name, seed=3):
        reasoning, answer = task.trace(ex, rng, "slip")
        if task.check(answer, ex):
            right.append((ex["question"], reasoning, answer))
    assert not right


@pytest.mark.parametrize("name", NAMES)
def test_guess_traces_are_short_and_mostly_wrong(name):
    task, rng = TASKS[name], random.Random(4)
    n_right = 0
    for ex in problems(name, seed=5):
        reasoning, answer = task.trace(ex, rng, "guess")
        assert "=" not in reasoning  # no work shown
        n_right += task.check(answer, ex)
    assert n_right < N_PROBLEMS // 2
    assert set(STYLES) == {"careful", "slip", "corrected", "guess"}


COUNTDOWN = {"task": "countdown", "numbers": [6, 11, 8], "target": 22, "answer": None}


@pytest.mark.parametrize(
    "answer, ok",
    [
        ("(8 - 6) * 11", True),
        ("11 * (8 - 6)", True),
        ("(8 - 6) * 11 = 22", True),
        ("  (8-6)*11  ", True),
        ("8 - 6 * 11", False),  # wrong value
        ("(8 - 6) * 12", False),  # wrong number
        ("(8 - 8) * 11 + 22", False),  # numbers reused / not given
        ("(11 + 11)", False),  # reused, and 6 and 8 unused
        ("2 * 11", False),  # uses intermediates, not the numbers
        ("22", False),
        ("(8 - 6) * 11 * 1", False),  # an extra number
        ("(8 - 6) * 11 / 1", False),
        ("((8 - 6) * 11)) ", False),  # syntax error
        ("__import__('os').getcwd()", False),
        ("x", False),
        ("'22'", False),
        ("(8 - 6) * 11.0", False),
    ],
)
def test_countdown_check(answer, ok):
    assert TASKS["countdown"].check(answer, COUNTDOWN) is ok


@pytest.mark.parametrize(
    "numbers, target, answer",
    [
        ([8, 2, 1], 4, "(8 / 2) * 1"),  # true division
        ([8, 2, 1], 4, "(8 // 2) * 1"),
        ([2, 3, 1], 8, "(2 ** 3) * 1"),
        ([7, 3, 1], 1, "(7 % 3) * 1"),
        ([5, 2, 1], 20, "(5 << 2) * 1"),
        ([5, 1, 2], 8, "-(1 - 5) * 2"),  # unary minus is not one of + - *
        ([5, 2, 1], 5, "max(5, 2, 1)"),
        ([5, 2, 1], 7, "abs(5 + 2 * 1)"),
        ([5, 2, 1], 7, "__import__('math').floor(5 + 2 * 1)"),
    ],
)
def test_countdown_check_rejects_other_operators(numbers, target, answer):
    """Each answer evaluates to the target in Python; its operators alone make it wrong."""
    assert eval(answer) == target  # fixed strings, written above
    ex = {"task": "countdown", "numbers": numbers, "target": target, "answer": None}
    assert not TASKS["countdown"].check(answer, ex)


def test_countdown_check_rejects_huge_input():
    assert not TASKS["countdown"].check("(" * 500 + "1" + ")" * 500, COUNTDOWN)
    assert not TASKS["countdown"].check("1" + " + 0" * 100, COUNTDOWN)


# --------------------------------------------------------------------------- splits, streams


@pytest.mark.parametrize("name", NAMES)
def test_stream_split_and_reproducible(name):
    task = TASKS[name]
    train = list(itertools.islice(stream(task, "train", 11), 200))
    test = list(itertools.islice(stream(task, "test", 11), 50))
    assert all(split_of(ex["question"]) == "train" for ex in train)
    assert all(split_of(ex["question"]) == "test" for ex in test)
    assert train == list(itertools.islice(stream(task, "train", 11), 200))
    assert train != list(itertools.islice(stream(task, "train", 12), 200))
    uniq = list(itertools.islice(stream(task, "test", 11, unique=True), 50))
    assert len({ex["question"] for ex in uniq}) == 50


def test_split_of_is_a_stable_tenth():
    qs = [f"Compute {i} + 1." for i in range(3000)]
    share = sum(split_of(q) == "test" for q in qs) / len(qs)
    assert 0.07 < share < 0.13
    assert [split_of(q) for q in qs[:50]] == [split_of(q) for q in qs[:50]]


@pytest.mark.parametrize("spec", NAMES + ["mix"])
def test_heldout_disjoint_from_train_stream(spec):
    held = heldout(spec, 100)
    qs = [ex["question"] for ex in held]
    assert len(held) == 100
    assert len(set(qs)) == len(qs)  # distinct
    assert all(split_of(q) == "test" for q in qs)
    train = [ex["question"] for ex in itertools.islice(train_stream(spec, 0), 3000)]
    assert all(split_of(q) == "train" for q in train)
    assert not set(qs) & set(train)
    assert heldout(spec, 100) == held  # reproducible
    if spec == "mix":
        assert {ex["task"] for ex in held} == set(MIX_TASKS)


def test_train_stream_reproducible():
    a = list(itertools.islice(train_stream("mix", 3), 100))
    assert a == list(itertools.islice(train_stream("mix", 3), 100))
    assert a != list(itertools.islice(train_stream("mix", 4), 100))
    assert {ex["task"] for ex in a} == set(MIX_TASKS)
    two = list(itertools.islice(train_stream("arith+linear", 3), 100))
    assert {ex["task"] for ex in two} == {"arith", "linear"}


def test_unknown_dataset():
    with pytest.raises(R1kitError, match="nosuchtask"):
        train_stream("nosuchtask", 0)
    with pytest.raises(R1kitError):
        heldout("nosuchtask", 10)
    with pytest.raises(R1kitError):
        train_stream("arith+nosuchtask", 0)


# --------------------------------------------------------------------------- JSONL


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_jsonl_good(tmp_path):
    p = write(
        tmp_path / "data.jsonl",
        [
            json.dumps({"question": "What is 1/2 of 1?", "answer": "\\frac{1}{2}"}),
            "",
            json.dumps({"problem": "Compute 2 + 2.", "answer": 4, "id": 7}),
            json.dumps({"prompt": "Say 日本語.", "answer": "日本語"}, ensure_ascii=False),
        ],
    )
    rows = read_jsonl(p)
    assert [r["question"] for r in rows] == ["What is 1/2 of 1?", "Compute 2 + 2.", "Say 日本語."]
    assert [r["answer"] for r in rows] == ["\\frac{1}{2}", "4", "日本語"]  # answers become str
    assert rows[1]["id"] == 7 and rows[1]["problem"] == "Compute 2 + 2."
    assert read_jsonl(str(p)) == rows


def test_read_jsonl_malformed_line(tmp_path):
    good = json.dumps({"question": "q", "answer": "1"})
    p = write(tmp_path / "bad.jsonl", [good, good, "{not json", good])
    with pytest.raises(R1kitError, match=":3:"):
        read_jsonl(p)


def test_read_jsonl_missing_answer(tmp_path):
    good = json.dumps({"question": "q", "answer": "1"})
    p = write(tmp_path / "noanswer.jsonl", [good, json.dumps({"question": "q2"})])
    with pytest.raises(R1kitError, match=":2:") as err:
        read_jsonl(p)
    assert "answer" in str(err.value)
    p = write(tmp_path / "noquestion.jsonl", [json.dumps({"text": "q", "answer": "1"})])
    with pytest.raises(R1kitError, match=":1:"):
        read_jsonl(p)
    p = write(tmp_path / "array.jsonl", [good, "[1, 2]"])
    with pytest.raises(R1kitError, match=":2:"):
        read_jsonl(p)


def test_read_jsonl_missing_or_empty(tmp_path):
    with pytest.raises(R1kitError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(R1kitError):
        train_stream(str(tmp_path / "nope.jsonl"), 0)
    p = write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(R1kitError, match="empty"):
        read_jsonl(p)


def test_jsonl_train_and_heldout_split(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(300)]
    p = write(tmp_path / "math.jsonl", [json.dumps(r) for r in rows])
    held = heldout(str(p), 1000)
    assert held and all(split_of(r["question"]) == "test" for r in held)
    train = list(itertools.islice(train_stream(str(p), 0), 600))
    assert all(split_of(r["question"]) == "train" for r in train)
    assert not {r["question"] for r in held} & {r["question"] for r in train}
    assert len(held) + len({r["question"] for r in train}) == 300
    assert train == list(itertools.islice(train_stream(str(p), 0), 600))
    # an explicit eval file wins
    assert heldout("arith", 2, eval_file=str(p)) == read_jsonl(p)[:2]


# --------------------------------------------------------------------------- corpus


def completion_of(doc: str) -> tuple[str, str]:
    """(question, completion) of one corpus document."""
    head, sep, tail = doc.partition("Assistant: <think>")
    assert sep, doc
    question = head.split("User: ", 1)[1].rsplit("\n", 1)[0]
    assert doc == r1zero_prompt(question) + tail
    return question, tail


def test_corpus_documents():
    docs = list(itertools.islice(documents(0), 400))
    assert docs == list(itertools.islice(documents(0), 400))
    assert docs[:50] != list(itertools.islice(documents(1), 50))
    parts = [completion_of(d) for d in docs]
    assert all(split_of(q) == "train" for q, _ in parts)  # only train-split problems
    completions = [c for _, c in parts]
    assert any("Wait" in c for c in completions)  # corrected
    assert any("about" in c or "Maybe" in c for c in completions)  # guess
    assert any("about" in c for c in completions)
    assert any("<answer>" in c for c in completions)  # tagged
    assert any("<answer>" not in c and "</think>" in c for c in completions)  # plain / label
    assert any("</think>" not in c for c in completions)  # unclosed
    tasks = {
        "Compute": "arith",
        "Solve for x": "linear",
        "Use the numbers": "countdown",
    }
    seen = {t for q, _ in parts for k, t in tasks.items() if q.startswith(k)}
    assert seen == set(MIX_TASKS)
    only = [completion_of(d)[0] for d in itertools.islice(documents(0, ("linear",)), 50)]
    assert all(q.startswith("Solve for x") for q in only)
