"""R1's later-stage rewards: language consistency, a reward model, per-example reward choice."""

from __future__ import annotations

import pytest

from r1kit.rewards.base import WeightedReward, get_reward
from r1kit.rewards.language import consistency, language_consistency

pytestmark = pytest.mark.usefixtures("one_thread")


def test_language_consistency_is_the_share_of_target_language_words():
    assert consistency("Let me add: 37 + 48 = 85.") == 1.0  # numbers and symbols are neutral
    assert consistency("37 + 48 = 85") == 1.0  # no words: nothing is mixed
    assert consistency("Let me 计算 this") == pytest.approx(3 / 5)  # each CJK char is a word
    assert consistency("让我们 think", "zh") == pytest.approx(3 / 4)
    assert consistency("Подумаем вместе now", "ru") == pytest.approx(2 / 3)
    lex = frozenset({"let", "me", "check"})
    assert consistency("let me vérifier", "en", lexicon=lex) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        consistency("x", "klingon")
    # the reward judges the reasoning only; the target comes from the example
    done = " Let me 计算 it. </think> <answer> 5 </answer>"
    assert language_consistency(done, {}) == pytest.approx(3 / 5)
    assert language_consistency(done, {"language": "zh"}) == pytest.approx(2 / 5)
    assert get_reward("language") is language_consistency


def test_each_example_says_which_rewards_apply():
    calls = []

    def accuracy_spy(completion, example):
        calls.append(example["question"])
        return 1.0

    r = WeightedReward({"format": 1.0})
    r.fns["acc"], r.weights["acc"] = accuracy_spy, 2.0
    text = " 2 + 3 = 5. </think> <answer> 5 </answer>"
    both = r.components(text, {"question": "a", "answer": "5"})
    only_fmt = r.components(text, {"question": "b", "answer": "", "rewards": ["format"]})
    assert both == {"format": 1.0, "acc": 1.0} and r.total(both) == 3.0
    assert only_fmt == {"format": 1.0, "acc": 0.0} and calls == ["a"]  # not even computed
    assert r.components(text, {"question": "c", "rewards": "acc"}) == {"format": 0.0, "acc": 1.0}


def test_reward_model_learns_good_from_bad_and_loads_by_spec(tmp_path):
    from r1kit.rewards.reward_model import train_reward_model
    from r1kit.sft.data import load_conversations

    rows = []
    for c in load_conversations("traces:arith", limit=40, seed=5):
        q, good = c.messages[0]["content"], c.messages[1]["content"][len("<think>") :]
        rows.append({"question": q, "completion": good, "label": 1})
        rows.append({"question": q, "completion": " wait wait wait wait wait wait", "label": 0})
    res = train_reward_model(None, rows, tmp_path / "rm", epochs=3, lr=2e-3, batch_size=16)
    assert res["heldout_acc"] >= 0.9, res
    rm = get_reward(f"reward_model@{tmp_path / 'rm'}")
    ex = {"question": "Compute 12 + 7 - 3.", "template": "r1zero"}
    good = rm(" 12 + 7 = 19. 19 - 3 = 16. </think> <answer> 16 </answer>", ex)
    bad = rm(" wait wait wait wait wait wait", ex)
    assert 0.0 <= bad < good <= 1.0
    assert get_reward(f"reward_model@{tmp_path / 'rm'}") is rm  # loaded once per path
