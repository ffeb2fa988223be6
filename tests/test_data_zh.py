"""Tasks worded in Chinese (`mix@zh`): same problems and checker, Chinese questions and traces,
and English reasoning on them is what the language reward and the mixing filter catch."""

from __future__ import annotations

import random

import pytest

from r1kit.data.datasets import heldout, train_stream
from r1kit.data.tasks import TASKS
from r1kit.errors import R1kitError
from r1kit.rewards.language import consistency, language_consistency
from r1kit.sampling.filters import Limits, failures
from r1kit.sft.data import trace_rows


def test_same_problems_chinese_wording():
    en, zh = heldout("mix", 30), heldout("mix@zh", 30)
    assert [e["answer"] for e in en] == [z["answer"] for z in zh]
    assert all(z["language"] == "zh" and z["question"] != e["question"] for e, z in zip(en, zh))
    # numbers survive the wording, and nothing English is left in the question
    for e, z in zip(en, zh):
        assert [c for c in e["question"] if c.isdigit()] == [
            c for c in z["question"] if c.isdigit()
        ]
        assert consistency(z["question"], "zh") == 1.0, z["question"]
    first = next(train_stream("linear@zh", 0))
    assert first["question"].startswith("解 x:") and first["language"] == "zh"


def test_unknown_language_names_the_known_ones():
    with pytest.raises(R1kitError, match="languages: en, zh"):
        heldout("mix@xx", 5)
    with pytest.raises(R1kitError, match="unknown dataset"):
        heldout("nosuchtask@zh", 5)


def test_chinese_traces_are_readable_and_unmixed():
    for conv in trace_rows("mix@zh", 300, 0):
        user, reply = conv.messages[0]["content"], conv.messages[1]["content"]
        assert consistency(user, "zh") == 1.0, user
        completion = reply.split("<think>", 1)[1]  # the text after the prompt's <think>
        reasoning = completion.split("</think>")[0]
        assert consistency(reasoning, "zh") == 1.0, reply  # no English word left
        assert failures(completion, {"language": "zh"}, "stop", Limits()) == [], reply


def test_english_reasoning_on_a_chinese_prompt_is_mixing():
    ex = heldout("linear@zh", 1)[0]
    reasoning, answer = TASKS["linear"].trace(ex, random.Random(0), "careful")
    completion = f" {reasoning} </think> <answer> {answer} </answer>"
    assert TASKS["linear"].check(answer, ex)
    assert language_consistency(completion, ex) == 0.0  # every word is English
    assert "language_mixing" in failures(completion, ex, "stop", Limits())
    assert language_consistency(completion, {**ex, "language": "en"}) == 1.0
