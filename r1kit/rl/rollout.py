"""Rollouts: prompts -> token ids -> engine samples -> text -> rewards, for RL and evaluation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from r1kit.chat import build_prompt, encode_prompt
from r1kit.engine import Engine, SamplingParams
from r1kit.rewards.base import WeightedReward

REFLECTION = re.compile(r"\b(wait|check|verify|recheck|let me re)\w*", re.I)


@dataclass
class Rollout:
    example: dict[str, Any]
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float] | None
    text: str
    finish_reason: str
    rewards: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0

    @property
    def reflects(self) -> bool:
        return bool(REFLECTION.search(self.text))


def encode_prompts(tokenizer: Any, examples: Sequence[dict], template: str) -> list[list[int]]:
    texts = [build_prompt(template, ex["question"], tokenizer) for ex in examples]
    return [encode_prompt(tokenizer, t) for t in texts]


def generate(
    engine: Engine,
    tokenizer: Any,
    examples: Sequence[dict],
    template: str,
    params: SamplingParams,
) -> list[Rollout]:
    """n = params.n rollouts per example, grouped: example 0's samples first, then example 1's."""
    prompts = encode_prompts(tokenizer, examples, template)
    outs = engine.generate(prompts, params)
    rollouts = []
    for ex, p, out in zip(examples, prompts, outs):
        for s in out.samples:
            text = tokenizer.decode(s.token_ids, skip_special_tokens=True)
            rollouts.append(
                Rollout(
                    {**ex, "template": template}, p, s.token_ids, s.logprobs, text, s.finish_reason
                )
            )
    return rollouts


def score(rollouts: Sequence[Rollout], reward: WeightedReward) -> None:
    reward.prepare([r.text for r in rollouts], [r.example for r in rollouts])
    for r in rollouts:
        r.rewards = reward.components(r.text, r.example)
        r.reward = reward.total(r.rewards)
