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
from r1kit.train.batch import TrainBatch, collate, to_device
from r1kit.train.compile import compile_decoder_layers, compile_seconds, compile_wanted
from r1kit.train.finite import NonFiniteGuard
from r1kit.train.plan import micro_batches
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
        guard: NonFiniteGuard | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        """temperature: the sampling temperature the rollouts were drawn at (log-probs are of
        the tempered policy); max_tokens: the completion budget (the constant of Dr. GRPO's
        loss aggregation); guard: the non-finite guard of every optimizer step (train/finite.py;
        default: stop at the first non-finite one); compile_backend: torch.compile's backend
        where the update is compiled (optim.compile_update)."""
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
        # compiled update (default on CUDA): fused elementwise work around the matmuls
        self.compiled = compile_wanted(optim.compile_update, model)  # train/compile.py
        self.compile_backend = compile_backend if self.compiled else None
        if self.compiled:
            compile_decoder_layers(model, compile_backend)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],  # only the adapters under LoRA
            lr=optim.lr,
            betas=(0.9, 0.99),
            weight_decay=optim.weight_decay,
            fused=on_gpu,  # one kernel for all parameters on GPU
        )
        self.step_count = 0
        self.guard = guard or NonFiniteGuard("stop", lr=optim.lr)

    def lr_now(self) -> float:
        w, lr = self.optim.warmup_steps, self.optim.lr
        return lr * min(1.0, (self.step_count + 1) / w) if w else lr

    def advantages(self, rollouts: Sequence[Rollout]) -> torch.Tensor:
        rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
        return grpo.group_advantages(rewards, self.algo.group_size, scale=self.algo.scale_rewards)

    @torch.no_grad()
    def _fixed_logprobs(self, model, batches: list[TrainBatch]) -> list[torch.Tensor]:
        """Log-probs [n, T-1] of each micro-batch under `model`, without gradients (pi_old for
        mu > 1, the frozen reference for the KL term)."""
        return [
            model_logprobs(model, b, self.temperature, self.optim.pack_tokens, self.compile_backend)
            for b in batches
        ]

    def update(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        """μ optimizer steps on one generation batch; returns averaged metrics."""
        algo, optim = self.algo, self.optim
        dev = next(self.model.parameters()).device  # the loss is computed where the model is
        compiling = compile_seconds()  # the first update compiles (once; dynamic shapes)
        adv = self.advantages(rollouts)  # [N], computed in group order
        zero_std = float((adv.view(-1, algo.group_size).abs().sum(1) == 0).float().mean())
        # token aggregation over the whole batch (all ranks): completion tokens not masked out
        kept = [r for r in rollouts if not (algo.mask_truncated and r.finish_reason == "length")]
        n_tok = max(1, sum(len(r.completion_ids) for r in kept))
        n_seq = len(rollouts)
        # this rank's forward/backward passes and their loss weights (train/plan.py): rows in
        # length order, so each micro-batch pads only to its own longest sequence
        plan = micro_batches(
            range(n_seq),
            optim.micro_batch,
            lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].completion_ids),
        )
        batches = [
            collate([rollouts[i] for i in rows], self.pad_id, algo.mask_truncated)
            for rows, _ in plan
        ]
        advs = [to_device(adv[list(rows)], dev) for rows, _ in plan]  # queued, no wait
        # π_old: with μ = 1 the detached current log-probs (ratio 1); with μ > 1 fixed up front
        old = self._fixed_logprobs(self.model, batches) if algo.mu > 1 else None
        ref = self._fixed_logprobs(self.ref_model, batches) if algo.beta > 0 else None
        sums: dict[str, float] = {"loss": 0.0, "clip_ratio": 0.0, "kl": 0.0, "grad_norm": 0.0}
        # [clip_ratio, kl] weighted by the micro-batches' token shares, summed on the device:
        # reading a value per micro-batch would wait for the device each time
        stats = torch.zeros(2, device=dev)
        # [sum of truncated IS weights, tokens truncated at the cap] over this rank's loss tokens
        is_sum = torch.zeros(2, device=dev)
        self.model.train()
        for inner in range(algo.mu):
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_now()
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=dev)  # this rank's part of this step's loss
            for j, (batch, (_, weight)) in enumerate(zip(batches, plan)):
                mb, live = _live(batch)
                live *= weight > 0  # a padding pass (weight 0) counts in no metric
                logp = model_logprobs(
                    self.model, mb, self.temperature, optim.pack_tokens, self.compile_backend
                )
                cmask = to_device(mb.completion_mask, dev)
                old_mb = logp.detach() if old is None else old[j]
                ref_mb = None if ref is None else ref[j]
                isw = None
                if algo.tis_cap > 0 and mb.engine_logp is not None:
                    elp = to_device(mb.engine_logp, dev)
                    isw = grpo.truncated_is_weight(old_mb, elp, algo.tis_cap)
                    on = cmask.float() * live  # no host sync: summed on the device
                    is_sum += torch.stack([(isw * on).sum(), ((isw >= algo.tis_cap) * on).sum()])
                loss, m = grpo.grpo_loss(
                    logp,
                    old_mb,
                    advs[j],
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
                    sync=False,
                )
                w = weight * live  # 1 in one process; W under torchrun (FSDP averages)
                (loss * w if w != 1 else loss).backward()
                share = float(mb.completion_mask.sum()) / n_tok * live  # a host tensor
                step_loss += loss.detach() * live
                stats += torch.stack([m["clip_ratio"], m["kl"]]) * share
            inner_loss = float(step_loss)  # one read per optimizer step (the guard needs it)
            sums["loss"] += inner_loss
            gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), optim.max_grad_norm)
            gn = dist.to_float(gn)  # sharded: a DTensor
            sums["grad_norm"] += gn
            # a non-finite loss or norm: the step is not applied (and the optimizer state is
            # untouched); stop raises, skip drops it. μ > 1 names the inner step in an error
            step = self.step_count + 1 if algo.mu == 1 else f"{self.step_count + 1}.{inner + 1}"
            if self.guard.check(step, inner_loss, gn, self.optimizer):
                self.optimizer.step()
                self.guard.check_weights(step, self.optimizer)
        self.step_count += 1
        sums["clip_ratio"], sums["kl"] = stats.tolist()
        for k in ("loss", "clip_ratio", "kl"):  # each rank holds its rows' part of these
            sums[k] = dist.all_reduce(sums[k])
        out = {k: v / algo.mu for k, v in sums.items()}
        out["lr"] = self.lr_now()
        if algo.tis_cap > 0:  # the engine-vs-trainer (and async: staleness) weights' summary
            w_sum, clipped = (dist.all_reduce(x) / (n_tok * algo.mu) for x in is_sum.tolist())
            out["is_weight"], out["is_clip"] = w_sum, clipped
        out["zero_std_groups"] = zero_std
        if self.compiled and compile_seconds() > compiling:  # only where this update compiled
            out["compile_s"] = round(compile_seconds() - compiling, 1)
        out["nonfinite_skipped"] = self.guard.take_skipped()  # optimizer steps not applied
        return out
