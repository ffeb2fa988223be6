"""The GRPO objective (Shao et al. 2024, DeepSeekMath; used by DeepSeek-R1) as pure tensor functions.

For a prompt q with G sampled completions o_1..o_G, rewards r_i, and per token t

    A_i     = (r_i - mean_j r_j) / std_j r_j                          (outcome supervision)
    rho_i,t = pi_theta(o_i,t) / pi_old(o_i,t)
    l_i,t   = -min(rho * A_i, clip(rho, 1 - eps, 1 + eps) * A_i) + beta * KL_i,t
    KL_i,t  = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1          (k3 estimator)
    loss    = mean_i (1/|o_i|) sum_t l_i,t                            (maximising J = -loss)

Deviations from the paper, each opt-in unless marked (default):
- We return a loss to minimise, the negative of the paper's J (default).
- eps is added to the std in the advantage denominator, and the std is torch.std's default,
  unbiased (correction=1), as TRL does; the paper names neither (default). Hence scaled
  advantages need G >= 2 (a one-sample std is NaN).
- scale="none" drops the std (Dr. GRPO, Liu et al. 2025); scale="batch" divides by the std over
  the whole batch instead of the group.
- Asymmetric clipping eps_low / eps_high ("clip-higher", DAPO, Yu et al. 2025).
- Aggregation "token" (DAPO) and "constant" (Dr. GRPO) beside the paper's "sequence".
- is_weight: a truncated importance weight min(pi_old / pi_engine, C) on the surrogate, for when
  the sampling engine's log-probs differ from the trainer's (TIS, Yao et al. 2025).
- soft_overlong_penalty: DAPO's length-penalty reward ramp (a reward term, not a loss term).

Shapes: N completions (= B prompts * G), T completion positions (padded; mask M is 1 on real
completion tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# scale -> A from centred rewards c = r - mean_group r [B, G], rewards r [B, G] and eps
_SCALE: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "group": lambda c, r, eps: c / (r.std(dim=1, keepdim=True) + eps),  # std per group [B, 1]
    "batch": lambda c, r, eps: c / (r.std() + eps),  # one std over all B*G rewards
    "none": lambda c, r, eps: c,  # Dr. GRPO: no std, no eps
}


def group_advantages(
    rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> Tensor:
    """A_i = (r_i - mean_group r) / (std + eps), std per `scale`: "group" | "batch" | "none".

    rewards: [B*G], group-contiguous (G completions of prompt 0, then prompt 1, ...).
    "none" returns r_i - mean_group r exactly (no eps). Returns [B*G].
    """
    if scale not in _SCALE:
        raise ValueError(f"unknown scale {scale!r}; valid: {sorted(_SCALE)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.reshape(-1, group_size).float()  # [B, G]
    centred = r - r.mean(dim=1, keepdim=True)  # [B, G]
    return _SCALE[scale](centred, r, eps).reshape(-1)  # [B*G]


def policy_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """rho = pi_theta / pi_old = exp(logp - old_logp); [N, T]."""
    return torch.exp(logp - old_logp)


def clipped_surrogate(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A); ratio [N, T], advantages [N]."""
    A = advantages.unsqueeze(-1)  # [N, 1], broadcast over tokens
    return -torch.minimum(ratio * A, ratio.clamp(1 - eps_low, 1 + eps_high) * A)  # [N, T]


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimate of KL(pi_theta || pi_ref): exp(d) - d - 1 with d = ref - logp; [N, T], >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def truncated_is_weight(old_logp: Tensor, engine_logp: Tensor, cap: float) -> Tensor:
    """min(pi_old / pi_engine, cap), detached (a constant weight, no gradient); [N, T]."""
    return torch.exp(old_logp - engine_logp).clamp(max=cap).detach()


def per_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    is_weight: Tensor | None = None,
) -> Tensor:
    """l_t = w * surrogate + beta * KL, w = is_weight (or 1); KL only when beta > 0. [N, T]."""
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    surrogate = clipped_surrogate(policy_ratio(logp, old_logp), advantages, eps_low, eps_high)
    surrogate = surrogate if is_weight is None else surrogate * is_weight  # [N, T]
    return surrogate + beta * k3_kl(logp, ref_logp) if beta > 0 else surrogate


def _agg_sequence(lm: Tensor, m: Tensor, L: int | None, n_tok: float | None, n_seq: int | None):
    # mean_i sum_t l M / sum_t M; an all-masked sequence gives 0 (denominator clamped to 1) and
    # still counts in the number of sequences. n_seq: total over the generation batch.
    per_seq = lm.sum(-1) / m.sum(-1).clamp(min=1)  # [N]
    return per_seq.sum() / (n_seq if n_seq is not None else m.shape[0])


def _agg_token(lm: Tensor, m: Tensor, L: int | None, n_tok: float | None, n_seq: int | None):
    # sum l M / total masked tokens (of the whole generation batch when n_tok is given)
    return lm.sum() / (n_tok if n_tok is not None else m.sum().clamp(min=1))


def _agg_constant(lm: Tensor, m: Tensor, L: int | None, n_tok: float | None, n_seq: int | None):
    # sum l M / (num_sequences * max_completion_len)
    if L is None:
        raise ValueError('mode "constant" needs max_completion_len')
    return lm.sum() / ((n_seq if n_seq is not None else m.shape[0]) * L)


_AGGREGATE = {"sequence": _agg_sequence, "token": _agg_token, "constant": _agg_constant}


def aggregate(
    loss_tok: Tensor,
    mask: Tensor,
    mode: str,
    max_completion_len: int | None = None,
    num_tokens: float | None = None,
    num_sequences: int | None = None,
) -> Tensor:
    """Reduce l [N, T] over mask M [N, T] to a scalar: "sequence" | "token" | "constant".

    num_tokens / num_sequences are the totals over the whole generation batch (all micro-batches
    and ranks); passing them makes micro-batch losses sum to the full-batch loss. They default to
    this call's mask.sum() and N. "sequence" with num_sequences gives sum_i(seq mean_i) / it.
    """
    if mode not in _AGGREGATE:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid: {sorted(_AGGREGATE)}")
    m = mask.to(loss_tok.dtype)
    return _AGGREGATE[mode](loss_tok * m, m, max_completion_len, num_tokens, num_sequences)


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    mode: str = "token",
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    is_weight: Tensor | None = None,
    max_completion_len: int | None = None,
    num_tokens: float | None = None,
    num_sequences: int | None = None,
    sync: bool = True,
) -> tuple[Tensor, dict[str, Any]]:
    """per_token_loss then aggregate. Metrics (masked means over this call's tokens):
    clip_ratio (share of tokens whose clipped branch is active: rho > 1 + eps_high with A > 0, or
    rho < 1 - eps_low with A < 0), kl (0 when beta == 0), ratio_mean. As floats, or with
    sync=False as 0-d tensors where the loss is (reading a value back waits for the device: a
    trainer sums them there and reads once per step)."""
    l_tok = per_token_loss(logp, old_logp, advantages, ref_logp, beta, eps_low, eps_high, is_weight)
    loss = aggregate(l_tok, mask, mode, max_completion_len, num_tokens, num_sequences)
    with torch.no_grad():
        m = mask.to(logp.dtype)  # [N, T]
        n = m.sum().clamp(min=1)
        ratio = policy_ratio(logp, old_logp)  # [N, T]
        A = advantages.unsqueeze(-1)  # [N, 1]
        clipped = ((ratio > 1 + eps_high) & (A > 0)) | ((ratio < 1 - eps_low) & (A < 0))
        kl = (k3_kl(logp, ref_logp) * m).sum() / n if beta > 0 else torch.zeros(())
        metrics = {
            "clip_ratio": (clipped * m).sum() / n,
            "kl": kl.to(n.device),
            "ratio_mean": (ratio * m).sum() / n,
        }
    if sync:
        return loss, {k: float(v) for k, v in metrics.items()}
    return loss, metrics


def soft_overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO's length reward: 0 up to max_len - cache_len, then a linear ramp down to -1 at
    max_len ((max_len - cache_len - len) / cache_len), and -1 beyond. lengths [N] -> [N]."""
    free = max_len - cache_len
    ramp = (free - lengths.float()) / cache_len
    return torch.where(lengths <= free, 0.0, torch.where(lengths <= max_len, ramp, -1.0))
