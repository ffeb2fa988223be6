"""Rollouts: prompts -> token ids -> engine samples -> text -> rewards, for RL and evaluation.

Text-level sampling sits below every job that samples (rl/, eval/, pipeline/, sft/): a prompt is
encoded here and only here. Under torchrun `generate_scored` splits whole prompt groups over the
ranks and gathers the scored rollouts, so every rank holds the single-process batch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from r1kit import dist
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
    # the optimizer steps the sampling weights had taken (async GRPO's lag; None: not recorded)
    policy_version: int | None = None

    @property
    def reflects(self) -> bool:
        return bool(REFLECTION.search(self.text))


def prompt(tokenizer: Any, question: str, template: str) -> tuple[str, list[int]]:
    """The prompt of one question as text and token ids: R1's single user message in the chat
    template (no system prompt), or the R1-Zero template for a base model."""
    text = build_prompt(template, question, tokenizer)
    return text, encode_prompt(tokenizer, text)


def encode_prompts(tokenizer: Any, examples: Sequence[dict], template: str) -> list[list[int]]:
    return [prompt(tokenizer, ex["question"], template)[1] for ex in examples]


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


def generate_scored(
    engine: Engine,
    tokenizer: Any,
    examples: Sequence[dict],
    template: str,
    params: SamplingParams,
    reward: WeightedReward,
) -> list[Rollout]:
    """n = params.n scored rollouts per example, grouped, in example order; under torchrun the
    same list on every rank, each rank having sampled and scored its contiguous share of whole
    prompt groups (so groups never straddle ranks)."""
    if dist.world() == 1:
        rollouts = generate(engine, tokenizer, examples, template, params)
        score(rollouts, reward)
        return rollouts
    # the seed one process's engine would draw for each prompt, in order (engine/paged.py)
    seeds = [params.seed if params.seed is not None else random.getrandbits(32) for _ in examples]

    def run(mine: range) -> list[Rollout]:
        plist = [replace(params, seed=seeds[i]) for i in mine]
        rollouts = generate(engine, tokenizer, [examples[i] for i in mine], template, plist)
        score(rollouts, reward)
        return rollouts

    return dist.map_shares(len(examples), run)
