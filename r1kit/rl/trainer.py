"""The GRPO update: scored rollouts in, one (or μ) optimizer steps out.

Composition, not inheritance: a plain object holding the policy, an optional frozen reference
and the optimizer. Generation happens elsewhere (the engine holds the same model object, so the
weights it samples from are always the ones just updated).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from r1kit import dist
from r1kit.config.parts import GRPO, GRPOOptim
from r1kit.rl import grpo
from r1kit.sampling.rollout import Rollout
from r1kit.train.batch import TrainBatch, collate
from r1kit.train.compile import compile_decoder_layers
from r1kit.train.shard import model_logprobs


def _live(mb: TrainBatch) -> tuple[TrainBatch, float]:
    """A micro-batch with no loss token (all masked) still needs a backward through every
    weight (FSDP's collectives must line up, and autograd needs a graph): give it one position
    and weight 0."""
    if float(mb.completion_mask.sum()) > 0:
        return mb, 1.0
    cmask = torch.zeros_like(mb.completion_mask)
    cmask[0, int(mb.attention_mask[0].sum()) - 2] = 1  # the position predicting row 0's last token
    return TrainBatch(mb.input_ids, mb.attention_mask, cmask, mb.engine_logp), 0.0


class GRPOTrainer:
    """Under torchrun (dist.world() > 1) the model is FSDP-sharded, every rank calls update()
    with the same, whole generation batch, computes advantages and normalisers from all of it
    (so they equal one process's), and trains on its share of the rows; gradients are summed
    over ranks, so the step equals the single-process step on the same batch."""

    def __init__(
        self,
        model,
        algo: GRPO,
        optim: GRPOOptim,
        *,
        temperature: float,
        max_tokens: int,
        pad_id: int,
        ref_model=None,
    ) -> None:
        """temperature: the sampling temperature the rollouts were drawn at (log-probs are of
        the tempered policy); max_tokens: the completion budget (the constant of Dr. GRPO's
        loss aggregation)."""
        if algo.beta > 0 and ref_model is None:
            raise ValueError("beta > 0 needs a reference model")
        self.model, self.ref_model, self.pad_id = model, ref_model, pad_id
        self.algo, self.optim = algo, optim
        self.temperature, self.max_tokens = temperature, max_tokens
        if optim.grad_checkpoint:  # each decoder layer's activations recomputed in backward
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        on_gpu = next(model.parameters()).is_cuda
        # --compile-update: fused elementwise work around the matmuls (train/compile.py)
        self.compile_backend = "inductor" if optim.compile_update else None
        if optim.compile_update:
            compile_decoder_layers(model)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],  # only the adapters under LoRA
            lr=optim.lr,
            betas=(0.9, 0.99),
            weight_decay=optim.weight_decay,
            fused=on_gpu,  # one kernel for all parameters on GPU
        )
        self.step_count = 0

    def lr_now(self) -> float:
        w, lr = self.optim.warmup_steps, self.optim.lr
        return lr * min(1.0, (self.step_count + 1) / w) if w else lr

    def advantages(self, rollouts: Sequence[Rollout]) -> torch.Tensor:
        rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
        return grpo.group_advantages(rewards, self.algo.group_size, scale=self.algo.scale_rewards)

    @torch.no_grad()
    def _logp_no_grad(self, model, batch: TrainBatch, mb: int, n_pass: int) -> torch.Tensor:
        parts = []
        for p in range(n_pass):
            pad = p * mb >= len(batch)  # past this rank's rows: row 0 again, result dropped
            i = 0 if pad else p * mb
            out = model_logprobs(
                model,
                batch.slice(i, i + mb),
                self.temperature,
                self.optim.pack_tokens,
                self.compile_backend,
            )
            if not pad:
                parts.append(out)
        T = batch.completion_mask.shape[1]
        return torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1])) for p in parts])

    def update(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        """μ optimizer steps on one generation batch; returns averaged metrics."""
        algo, optim = self.algo, self.optim
        dev = next(self.model.parameters()).device  # the loss is computed where the model is
        adv = self.advantages(rollouts)  # [N], computed in group order
        zero_std = float((adv.view(-1, algo.group_size).abs().sum(1) == 0).float().mean())
        # sort by length so each micro-batch pads only to its own longest sequence
        order = sorted(
            range(len(rollouts)),
            key=lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].completion_ids),
        )
        # token aggregation over the whole batch (all ranks): completion tokens not masked out
        n_tok = max(1, sum(len(r.completion_ids) for r in rollouts
                           if not (algo.mask_truncated and r.finish_reason == "length")))  # fmt: skip
        n_seq, W = len(rollouts), dist.world()
        # data-parallel: rank r takes every W-th row of the length order (similar token counts
        # per rank); a rank left without rows trains one with weight 0 so collectives line up
        mine = order[dist.rank() :: W] or order[:1]
        weight = W if dist.rank() < n_seq else 0  # W: FSDP averages gradients over ranks
        rollouts, adv = [rollouts[i] for i in mine], adv[mine].to(dev)
        batch = collate(rollouts, self.pad_id, algo.mask_truncated)
        mbs = dist.micro_batches(len(batch), n_seq, optim.micro_batch)
        # every rank runs the same number of passes (FSDP's collectives must line up); a rank
        # whose rows run out first pads with zero-weight passes over its row 0
        n_pass = dist.passes(n_seq, optim.micro_batch)
        # π_old: with μ = 1 the detached current log-probs (ratio 1); with μ > 1 fixed up front
        old = self._logp_no_grad(self.model, batch, mbs, n_pass) if algo.mu > 1 else None
        ref = self._logp_no_grad(self.ref_model, batch, mbs, n_pass) if algo.beta > 0 else None
        sums: dict[str, float] = {"loss": 0.0, "clip_ratio": 0.0, "kl": 0.0, "grad_norm": 0.0}
        self.model.train()
        for _ in range(algo.mu):
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_now()
            self.optimizer.zero_grad(set_to_none=True)
            for p in range(n_pass):
                pad = p * mbs >= len(batch)  # past this rank's rows: row 0 again, weight 0
                i = 0 if pad else p * mbs
                mb, live = _live(batch.slice(i, i + mbs))
                live = 0.0 if pad else live
                T = mb.completion_mask.shape[1]
                logp = model_logprobs(
                    self.model, mb, self.temperature, optim.pack_tokens, self.compile_backend
                )
                cmask = mb.completion_mask.to(dev)
                old_mb = logp.detach() if old is None else old[i : i + len(mb), :T]
                ref_mb = None if ref is None else ref[i : i + len(mb), :T]
                isw = None
                if algo.tis_cap > 0 and mb.engine_logp is not None:
                    isw = grpo.truncated_is_weight(old_mb, mb.engine_logp.to(dev), algo.tis_cap)
                loss, m = grpo.grpo_loss(
                    logp,
                    old_mb,
                    adv[i : i + len(mb)],
                    cmask,
                    mode=algo.loss_agg,
                    ref_logp=ref_mb,
                    beta=algo.beta,
                    eps_low=algo.eps_low,
                    eps_high=algo.eps_high,
                    is_weight=isw,
                    max_completion_len=self.max_tokens,
                    num_tokens=float(n_tok),
                    num_sequences=n_seq,
                )
                w = weight * live  # 1 in one process
                (loss * w if w != 1 else loss).backward()
                share = mb.completion_mask.sum().item() / n_tok * live * (weight > 0)
                sums["loss"] += loss.item() * live * (weight > 0)
                sums["clip_ratio"] += m["clip_ratio"] * share
                sums["kl"] += m["kl"] * share
            gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), optim.max_grad_norm)
            sums["grad_norm"] += dist.to_float(gn)  # sharded: a DTensor
            self.optimizer.step()
        self.step_count += 1
        for k in ("loss", "clip_ratio", "kl"):  # each rank holds its rows' part of these
            sums[k] = dist.all_reduce(sums[k])
        out = {k: v / algo.mu for k, v in sums.items()}
        out["lr"] = self.lr_now()
        out["zero_std_groups"] = zero_std
        return out
