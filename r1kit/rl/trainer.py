"""The GRPO update: scored rollouts in, one (or μ) optimizer steps out.

Composition, not inheritance: a plain object holding the policy, an optional frozen reference
and the optimizer. Generation happens elsewhere (the engine holds the same model object, so the
weights it samples from are always the ones just updated).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from r1kit.config import ZeroConfig
from r1kit.rl import grpo
from r1kit.rl.batch import TrainBatch, collate, token_logprobs
from r1kit.rl.rollout import Rollout


class GRPOTrainer:
    def __init__(self, model, cfg: ZeroConfig, pad_id: int, ref_model=None) -> None:
        if cfg.beta > 0 and ref_model is None:
            raise ValueError("beta > 0 needs a reference model")
        self.model, self.ref_model, self.cfg, self.pad_id = model, ref_model, cfg, pad_id
        on_gpu = next(model.parameters()).is_cuda
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],  # only the adapters under LoRA
            lr=cfg.lr,
            betas=(0.9, 0.99),
            weight_decay=cfg.weight_decay,
            fused=on_gpu,  # one kernel for all parameters on GPU
        )
        self.step_count = 0

    def lr_now(self) -> float:
        w = self.cfg.warmup_steps
        return self.cfg.lr * min(1.0, (self.step_count + 1) / w) if w else self.cfg.lr

    def advantages(self, rollouts: Sequence[Rollout]) -> torch.Tensor:
        rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
        return grpo.group_advantages(rewards, self.cfg.group_size, scale=self.cfg.scale_rewards)

    @torch.no_grad()
    def _logp_no_grad(self, model, batch: TrainBatch) -> torch.Tensor:
        mb = self.cfg.micro_batch
        parts = [
            token_logprobs(
                model, batch.slice(i, i + mb), self.cfg.temperature, pack=self.cfg.pack_tokens
            ).cpu()
            for i in range(0, len(batch), mb)
        ]
        T = batch.completion_mask.shape[1]
        return torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1])) for p in parts])

    def update(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        """μ optimizer steps on one generation batch; returns averaged metrics."""
        cfg = self.cfg
        adv = self.advantages(rollouts)  # [N], computed in group order
        zero_std = float((adv.view(-1, cfg.group_size).abs().sum(1) == 0).float().mean())
        # sort by length so each micro-batch pads only to its own longest sequence
        order = sorted(
            range(len(rollouts)),
            key=lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].completion_ids),
        )
        rollouts, adv = [rollouts[i] for i in order], adv[order]
        batch = collate(rollouts, self.pad_id, cfg.mask_truncated)
        n_tok = batch.completion_mask.sum().clamp(min=1)  # token aggregation over the whole batch
        # π_old: with μ = 1 the detached current log-probs (ratio 1); with μ > 1 fixed up front
        old = self._logp_no_grad(self.model, batch) if cfg.mu > 1 else None
        ref = self._logp_no_grad(self.ref_model, batch) if cfg.beta > 0 else None
        sums: dict[str, float] = {"loss": 0.0, "clip_ratio": 0.0, "kl": 0.0, "grad_norm": 0.0}
        self.model.train()
        for _ in range(cfg.mu):
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_now()
            self.optimizer.zero_grad(set_to_none=True)
            for i in range(0, len(batch), cfg.micro_batch):
                mb = batch.slice(i, i + cfg.micro_batch)
                T = mb.completion_mask.shape[1]
                logp = token_logprobs(self.model, mb, cfg.temperature, pack=cfg.pack_tokens).cpu()
                old_mb = logp.detach() if old is None else old[i : i + len(mb), :T]
                ref_mb = None if ref is None else ref[i : i + len(mb), :T]
                isw = None
                if cfg.tis_cap > 0 and mb.engine_logp is not None:
                    isw = grpo.truncated_is_weight(old_mb, mb.engine_logp, cfg.tis_cap)
                loss, m = grpo.grpo_loss(
                    logp,
                    old_mb,
                    adv[i : i + len(mb)],
                    mb.completion_mask,
                    mode=cfg.loss_agg,
                    ref_logp=ref_mb,
                    beta=cfg.beta,
                    eps_low=cfg.eps_low,
                    eps_high=cfg.eps_high,
                    is_weight=isw,
                    max_completion_len=cfg.max_new_tokens,
                    num_tokens=float(n_tok),
                    num_sequences=len(batch),
                )
                loss.backward()
                share = mb.completion_mask.sum().item() / n_tok.item()
                sums["loss"] += loss.item()
                sums["clip_ratio"] += m["clip_ratio"] * share
                sums["kl"] += m["kl"] * share
            gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            sums["grad_norm"] += float(gn)
            self.optimizer.step()
        self.step_count += 1
        out = {k: v / cfg.mu for k, v in sums.items()}
        out["lr"] = self.lr_now()
        out["zero_std_groups"] = zero_std
        return out
