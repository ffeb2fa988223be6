"""A few GRPO steps with the sandboxed code reward raise it, on the embedded tiny model.

The embedded model was pretrained on arithmetic traces, never on Python, so the toy is built to
be learnable by it: arithmetic problems posed as one-line programs. The example's prefix is
`answer = `, the model's `<answer>` is the expression completing it (`66`, or `37 + 48 - 19`),
and two hidden tests run in the sandbox like any other program's: the value is an int, and it
is right. The reward is `code_fraction` alone (the share of tests passed): no format reward.
"""

from __future__ import annotations

import pytest

from r1kit import sandbox
from r1kit.config.parts import GRPO, GRPOOptim
from r1kit.data.datasets import heldout
from r1kit.engine import SamplingParams, make_engine
from r1kit.rewards.base import WeightedReward
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import generate, score
from r1kit.sandbox import Limits, available

pytestmark = pytest.mark.skipif(not available(), reason="neither bubblewrap nor unshare works")


def _toy(n: int) -> list[dict]:
    return [
        {
            **ex,
            "tests": ["assert type(answer) is int", f"assert answer == {ex['answer']}"],
            "prefix": "answer = ",
            "entry_point": "answer",
        }
        for ex in heldout("arith", n)
    ]


def test_grpo_raises_the_code_reward(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    problems = _toy(4)
    sandbox.configure(limits=Limits(wall_s=10, cpu_s=2, memory_mb=256), workers=2)
    try:
        reward = WeightedReward({"code_fraction": 1.0})  # registered, on the shared sandbox

        def rollouts(n, seed):
            params = SamplingParams(
                n=n,
                temperature=1.0,
                max_tokens=48,
                stop_token_ids=(tok.eos_token_id,),
                seed=seed,
                logprobs=True,
            )
            rs = generate(
                make_engine(tiny_model, tok.pad_token_id), tok, problems, "r1zero", params
            )
            score(rs, reward)
            return rs

        def mean_reward():
            rs = rollouts(16, 1234)
            return sum(r.reward for r in rs) / len(rs)

        base = mean_reward()
        trainer = GRPOTrainer(
            tiny_model,
            GRPO(group_size=8),
            GRPOOptim(lr=1e-3),
            temperature=1.0,
            max_tokens=48,
            pad_id=tok.pad_token_id,
        )
        for step in range(6):
            trainer.update(rollouts(8, 100 + step))
        final = mean_reward()
    finally:
        sandbox.configure()
    # measured here: 0.22 -> 0.52 (76 s of CPU); 2 problems gave 0.22 -> 0.44
    assert final >= base + 0.2, (base, final)
