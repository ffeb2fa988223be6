"""Rollouts -> padded training tensors, and per-token log-probs of completions under a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from r1kit.rl.rollout import Rollout


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [N, T] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [N, T]
    completion_mask: torch.Tensor  # [N, T-1] 1 where position t predicts a completion token
    engine_logp: torch.Tensor | None  # [N, T-1] sampler log-probs on completion positions

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def slice(self, i: int, j: int) -> TrainBatch:
        # trim trailing all-pad columns so short micro-batches cost less
        T = int(self.attention_mask[i:j].sum(1).max())
        e = None if self.engine_logp is None else self.engine_logp[i:j, : T - 1]
        return TrainBatch(
            self.input_ids[i:j, :T],
            self.attention_mask[i:j, :T],
            self.completion_mask[i:j, : T - 1],
            e,
        )


def collate(rollouts: Sequence[Rollout], pad_id: int, mask_truncated: bool = False) -> TrainBatch:
    """Overlong filtering (`mask_truncated`): completions cut by max tokens get no loss."""
    T = max(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)
    N = len(rollouts)
    ids = torch.full((N, T), pad_id, dtype=torch.long)
    attn = torch.zeros((N, T), dtype=torch.long)
    cmask = torch.zeros((N, T - 1))
    has_lp = all(r.logprobs is not None for r in rollouts)
    elp = torch.zeros((N, T - 1)) if has_lp else None
    for i, r in enumerate(rollouts):
        P, C = len(r.prompt_ids), len(r.completion_ids)
        ids[i, : P + C] = torch.tensor(r.prompt_ids + r.completion_ids)
        attn[i, : P + C] = 1
        if not (mask_truncated and r.finish_reason == "length"):
            cmask[i, P - 1 : P + C - 1] = 1
        if elp is not None:
            elp[i, P - 1 : P + C - 1] = torch.tensor(r.logprobs)
    return TrainBatch(ids, attn, cmask, elp)


def token_logprobs(model, batch: TrainBatch, temperature: float = 1.0) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) for every position t: [N, T-1], from logits / temperature."""
    dev = next(model.parameters()).device
    ids, attn = batch.input_ids.to(dev), batch.attention_mask.to(dev)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
