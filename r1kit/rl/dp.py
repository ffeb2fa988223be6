"""Data-parallel rollouts and the sharded policy for GRPO under torchrun (r1kit/dist.py).

Every rank runs the same loop on the same data stream. Per step:

1. Prompts: all ranks draw the step's prompts and one sampling seed per prompt from the same
   (seeded, checkpointed) RNGs, the seeds a single process's engine would draw; rank r samples
   and scores its contiguous share of whole prompt groups with its own engine, so groups never
   straddle ranks and rewards are computed in parallel.
2. One all-gather of the scored rollouts (token ids, log-probs, rewards) gives every rank the
   whole generation batch in the single-process order: group statistics, batch-level reward
   scaling, dynamic sampling, the global token count and the step's metrics are then exactly
   the single-process ones with no further collectives.
3. The update (GRPOTrainer) trains each rank on its share of the rows of the FSDP-sharded
   policy; gradients are summed over ranks.
4. Each rank's engine holds its own unsharded copy of the policy; after the step it is refilled
   from the shards one parameter at a time (dist.gather_weights).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from r1kit import dist
from r1kit.engine import Engine, SamplingParams
from r1kit.errors import R1kitError
from r1kit.eval.heldout import evaluate as evaluate_local
from r1kit.eval.heldout import summarize_rollouts
from r1kit.rewards.base import WeightedReward
from r1kit.rl.batch import token_logprobs
from r1kit.rl.rollout import Rollout, generate, score


def prepare(model, ref_model=None, lora: bool = False):
    """Under torchrun: keep an unsharded copy of `model` for this rank's engine, then shard
    `model` (and the frozen reference) in place. Returns the engine's model (`model` itself in
    one process)."""
    if dist.world() == 1:
        return model
    if lora:
        raise R1kitError(
            "--lora-rank does not run under torchrun yet; shard the full model instead"
        )
    full = copy.deepcopy(model).eval().requires_grad_(False)  # the engine's weights [full]
    methods = {"token_logprobs": _token_logprobs}  # trainer log-probs under the root's hooks
    dist.shard(model, methods)
    if ref_model is not None:
        dist.shard(ref_model, methods)
    return full


def _token_logprobs(model, batch, temperature: float = 1.0, pack: int = 0, compile_backend=None):
    # batch.token_logprobs, returned as a tensor of its own: FSDP warns on a view [N, T-1]
    return token_logprobs(
        model, batch, temperature, pack=pack, compile_backend=compile_backend
    ).clone()


def sync(model, engine_model, engine: Engine) -> None:
    """After an optimizer step: the engine samples from the new weights."""
    if engine_model is not model:
        dist.gather_weights(model, engine_model)
    if hasattr(engine, "sync_weights"):
        engine.sync_weights()


def generate_scored(
    engine: Engine,
    tokenizer: Any,
    examples: Sequence[dict],
    template: str,
    params: SamplingParams,
    reward: WeightedReward,
) -> list[Rollout]:
    """n = params.n scored rollouts per example, grouped, in example order; under torchrun the
    same list on every rank, each rank having sampled and scored its share."""
    if dist.world() == 1:
        rollouts = generate(engine, tokenizer, examples, template, params)
        score(rollouts, reward)
        return rollouts
    # the seed one process's engine would draw for each prompt, in order (engine/paged.py)
    seeds = [params.seed if params.seed is not None else random.getrandbits(32) for _ in examples]
    mine = dist.share(len(examples))
    local: list[Rollout] = []
    if len(mine):
        plist = [replace(params, seed=seeds[i]) for i in mine]
        local = generate(engine, tokenizer, [examples[i] for i in mine], template, plist)
        score(local, reward)
    return [r for part in dist.all_gather_objects(local) for r in part]


def evaluate(
    engine: Engine,
    tokenizer: Any,
    problems: Sequence[dict],
    template: str,
    params: SamplingParams,
) -> tuple[dict[str, float], list[Rollout]]:
    """eval.heldout.evaluate, the problems split over the ranks; every rank gets the result."""
    if dist.world() == 1:
        return evaluate_local(engine, tokenizer, problems, template, params)
    mine = list(dist.share(len(problems)))
    local: list[Rollout] = []
    if mine:
        _, local = evaluate_local(engine, tokenizer, [problems[i] for i in mine], template, params)
    rollouts = [r for part in dist.all_gather_objects(local) for r in part]
    return summarize_rollouts(rollouts, params.n), rollouts
