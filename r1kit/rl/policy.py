"""The policy GRPO trains and the engine that samples from it, as one object: loading (from the
base or a checkpoint, with LoRA adapters and a frozen reference when asked), the update phase
(the engine asleep on GPU, weights synced after), checkpoints and the final model.

In one process the engine samples from the trainer's own weight tensors, so after an optimizer
step it samples from the new policy. Under torchrun the trainer's model is FSDP-sharded and the
engine holds a full copy (`engine_model`), refilled from the shards after each step. A sampling-
only policy (`train=False`: async GRPO's generator ranks) has the model and its engine but no
trainer; its weights come from the trainers (rl/async_loop.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from r1kit import dist
from r1kit.chat import set_template
from r1kit.config import ZeroConfig
from r1kit.engine import make_engine
from r1kit.modeling import load_model, load_tokenizer
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import Rollout
from r1kit.train.checkpoint import load_trainer_state
from r1kit.train.finite import NonFiniteGuard
from r1kit.train.lora import add_lora, load_lora_state, lora_state, merged
from r1kit.train.run import Run
from r1kit.train.shard import prepare, sync


def _engine_kw(cfg: ZeroConfig) -> dict:
    """Paged-engine options: no more sequences than one step or evaluation samples. Unseeded
    requests take their seeds from Python's `random`, which the job seeds and checkpoints."""
    if cfg.run.engine == "hf":
        return {}
    rows = max(cfg.algo.prompts_per_step * cfg.algo.group_size, cfg.eval.problems * cfg.eval.k)
    return {"max_num_seqs": min(512, rows)}


class Policy:
    """tokenizer, model (trained), ref_model (frozen, beta > 0), trainer, engine, engine_model."""

    def __init__(
        self, cfg: ZeroConfig, device: str, checkpoint: Path | None = None, train: bool = True
    ) -> None:
        self.device = device
        self.tokenizer = tok = load_tokenizer(str(checkpoint) if checkpoint else cfg.model)
        set_template(tok, cfg.template)  # the model is saved with the format it is trained in
        dtype = None if cfg.run.dtype == "auto" else getattr(torch, cfg.run.dtype)
        if cfg.lora.rank:  # adapters on the base; a checkpoint holds them in its trainer state
            model = load_model(cfg.model, dtype=dtype, device=device)
            model = add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
            if checkpoint:
                state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
                load_lora_state(model, state["lora"])
        else:
            model = load_model(str(checkpoint) if checkpoint else cfg.model, dtype, device)
        if not train:  # sampling only: no sharding, no optimizer, no reference
            self.model = self.engine_model = model.eval().requires_grad_(False)
            self.lora, self.trainer = bool(cfg.lora.rank), None
            self.engine = make_engine(
                model, pad_token_id=tok.pad_token_id, kind=cfg.run.engine, **_engine_kw(cfg)
            )
            return
        ref = None
        if cfg.algo.beta > 0:
            ref = load_model(cfg.model, dtype=dtype, device=device).eval().requires_grad_(False)
        self.model, self.lora = model, bool(cfg.lora.rank)
        self.engine_model = prepare(model, ref, lora=self.lora)  # torchrun: shards model
        self.trainer = GRPOTrainer(
            model,
            cfg.algo,
            cfg.optim,
            temperature=cfg.sampling.temperature,
            max_tokens=cfg.sampling.max_tokens,
            pad_id=tok.pad_token_id,
            ref_model=ref,
            guard=NonFiniteGuard(cfg.run.nan_policy, lr=cfg.optim.lr, out=cfg.run.out),
        )
        self.engine = make_engine(
            self.engine_model, pad_token_id=tok.pad_token_id, kind=cfg.run.engine, **_engine_kw(cfg)
        )

    def resume(self, checkpoint: Path | None) -> dict[str, Any] | None:
        """Optimizer state, RNGs and step count from a checkpoint (weights too when sharded);
        returns its trainer state, None without one."""
        if checkpoint is None:
            return None
        if self.trainer is None:  # sampling only: the state's step and data position
            return torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        state = load_trainer_state(checkpoint, self.trainer.optimizer, self.model)
        if (checkpoint / "dcp").is_dir():  # weights came from the shards: into the engine too
            sync(self.model, self.engine_model, self.engine)
        elif dist.is_sharded(self.model):  # a one-process checkpoint (or one async trainer's)
            dist.shard_optimizer_state(self.trainer.optimizer)  # full moments -> this shard
        self.trainer.step_count = state["step"]
        return state

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """The update phase. On GPU the engine gives its KV cache back while the trainer runs;
        after the step the engine samples from the new weights."""
        asleep = torch.device(self.device).type == "cuda" and hasattr(self.engine, "sleep")
        if asleep:
            self.engine.sleep()
        upd = self.trainer.update(rollouts)
        sync(self.model, self.engine_model, self.engine)
        if asleep:
            self.engine.wake()
        return upd

    def save(self, run: Run, step: int, extra: dict[str, Any]) -> Path:
        """A checkpoint: the merged HF model (or the shards and the engine's full copy), the
        optimizer, and under LoRA the adapters in the trainer state."""
        if self.lora:
            extra = {**extra, "lora": lora_state(self.model)}
        model = merged(self.model)
        opt = self.trainer.optimizer
        return run.save(step, model, self.tokenizer, opt, extra, full_model=self.engine_model)

    def final_model(self) -> Any:
        """The trained model as a plain `transformers` model (under torchrun: the engine's full
        copy, refreshed after every step)."""
        return merged(self.model) if self.engine_model is self.model else self.engine_model
