"""Rollouts -> padded training tensors, and per-token log-probs of completions under a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

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


LOGIT_CHUNK = 4096  # positions per LM-head chunk: [4096, 152k] fp32 logits = 2.5 GB at most


def token_logprobs(
    model, batch: TrainBatch, temperature: float = 1.0, chunk: int = LOGIT_CHUNK
) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) / temperature-scaled, [N, T-1], on completion positions (0 elsewhere).

    Never holds full [N, T, V] logits: the decoder's hidden states at completion positions go
    through the LM head `chunk` positions at a time, and with gradients each chunk is recomputed
    in backward (activation checkpointing), so peak memory is one chunk of logits.
    """
    dev = next(model.parameters()).device
    ids, attn = batch.input_ids.to(dev), batch.attention_mask.to(dev)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state
    N, T, H = hidden.shape
    pos = batch.completion_mask.to(dev).flatten().nonzero()[:, 0]  # [M] into the [N*(T-1)] grid
    h = hidden[:, :-1].reshape(-1, H).index_select(0, pos)  # [M, H]
    target = ids[:, 1:].reshape(-1).index_select(0, pos)
    head = model.get_output_embeddings()
    parts = []
    for i in range(0, h.shape[0], chunk):
        args = (h[i : i + chunk], head.weight, head.bias, target[i : i + chunk], temperature)
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logp, *args, use_reentrant=False))
        else:
            parts.append(_chunk_logp(*args))
    vals = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(N * (T - 1), device=dev, dtype=torch.float32)
    return out.index_put((pos,), vals).view(N, T - 1)


def _chunk_logp(h, weight, bias, target, temperature: float) -> torch.Tensor:
    logits = torch.nn.functional.linear(h, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(1, target[:, None])[:, 0] - logits.logsumexp(-1)
