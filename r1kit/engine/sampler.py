"""Per-row sampling: temperature, top-k, top-p, min-p, seeded or not, with log-probs."""

from __future__ import annotations

import torch


def _filter(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor):
    """Mask logits [B, V] outside each row's top-k / nucleus / min-p set with -inf."""
    V = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    rank = torch.arange(V, device=logits.device).expand_as(probs)
    k = torch.where(top_k > 0, top_k, V).unsqueeze(1)
    drop = rank >= k
    # nucleus: keep the smallest prefix whose mass reaches top_p (the top token always stays)
    drop |= (probs.cumsum(-1) - probs) >= top_p.unsqueeze(1)
    drop |= probs < (min_p.unsqueeze(1) * probs[:, :1])
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def sample(
    logits: torch.Tensor,  # [B, V] raw last-position logits
    temperature: torch.Tensor,  # [B]; 0 = greedy
    top_p: torch.Tensor,  # [B]
    top_k: torch.Tensor,  # [B] long
    min_p: torch.Tensor,  # [B]
    generators: list[torch.Generator | None],  # per row; None rows share the global RNG
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (tokens [B], logprobs [B]); log-probs are of the temperature-scaled distribution
    before top-k/p filtering, which is what the GRPO ratio needs (DESIGN.md section 4)."""
    logits = logits.float()
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature).unsqueeze(1)
    logp = scaled.log_softmax(-1)
    filtered = _filter(scaled, top_k, top_p, min_p)
    # Gumbel-free exponential race: argmax p / E with E ~ Exp(1) is a sample from p
    noise = torch.empty_like(filtered)
    shared = [i for i, g in enumerate(generators) if g is None]
    if shared:
        noise[shared] = torch.empty(
            len(shared), filtered.shape[1], device=filtered.device
        ).exponential_()
    for i, g in enumerate(generators):
        if g is not None:
            noise[i] = torch.empty(filtered.shape[1], device=filtered.device).exponential_(
                generator=g
            )
    sampled = (filtered.softmax(-1) / noise).argmax(-1)
    tokens = torch.where(greedy, logits.argmax(-1), sampled)
    return tokens, logp.gather(1, tokens.unsqueeze(1)).squeeze(1)
