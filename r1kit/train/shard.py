"""The policy under torchrun (r1kit/dist.py): FSDP2 sharding, the engine's full copy, weight sync.

Every training job shards its model the same way. GRPO also keeps an unsharded copy of the
policy for each rank's engine (rollouts need whole weights); after each optimizer step that
copy is refilled from the shards one parameter at a time (dist.gather_weights). SFT keeps no
copy and gathers one (`unshard`) only to evaluate and save the final model. In one process all
of this is a no-op: the engine samples from the trainer's own weight tensors.
"""

from __future__ import annotations

import copy

from r1kit import dist
from r1kit.engine import Engine
from r1kit.errors import R1kitError
from r1kit.modeling import load_model
from r1kit.train.batch import TrainBatch, token_logprobs


def logprobs_method(
    model, batch: TrainBatch, temperature: float = 1.0, pack: int = 0, compile_backend=None
):
    """batch.token_logprobs as a method of the sharded root (run under its FSDP hooks),
    returned as a tensor of its own: FSDP warns on a view [N, T-1]."""
    return token_logprobs(
        model, batch, temperature, pack=pack, compile_backend=compile_backend
    ).clone()


def model_logprobs(model, batch: TrainBatch, temperature: float, pack: int, backend=None):
    """Completion-token log-probs [N, T-1] of a plain or sharded model (see logprobs_method)."""
    fn = getattr(model, "token_logprobs", None)
    if fn is not None:
        return fn(batch, temperature, pack=pack, compile_backend=backend)
    return token_logprobs(model, batch, temperature, pack=pack, compile_backend=backend)


def shard(model):
    """Shard `model` in place under torchrun (FSDP2; bf16 compute on GPU), its log-prob call
    made a method under the root's hooks. A no-op in one process. Returns `model`."""
    if dist.world() > 1:
        dist.shard(model, {"token_logprobs": logprobs_method})
    return model


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
    shard(model)
    if ref_model is not None:
        shard(ref_model)
    return full


def sync(model, engine_model, engine: Engine) -> None:
    """After an optimizer step: the engine samples from the new weights."""
    if engine_model is not model:
        dist.gather_weights(model, engine_model)
    if hasattr(engine, "sync_weights"):
        engine.sync_weights()


def unshard(model, spec: str | None, device: str):
    """A plain model with the sharded `model`'s weights on every rank (all ranks call this):
    the architecture loaded from `spec` (the run's starting model), then filled from the shards
    one all-gather per parameter."""
    full = load_model(spec, device=device).eval()
    dist.gather_weights(model, full)
    return full
