"""GRPO objective against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
from numerics import assert_within, tol

from r1kit.rl import grpo

LOG2 = math.log(2.0)
K3_LOG2 = 2.0 - LOG2 - 1.0  # d = ref - logp = log 2: exp(d) - d - 1 = 0.3068528...
K3_MLOG2 = 0.5 + LOG2 - 1.0  # d = -log 2: 0.5 + log 2 - 1 = 0.1931471...


def close(actual, expected, terms: int = 16):
    """float32 objective vs the hand value: a few elementwise ops and a mean over at most
    `terms` tokens, on values of at most the expected size (1 when it is 0)."""
    want = torch.tensor(expected, dtype=torch.float64)
    mag = max(float(want.abs().max()), 1.0)
    assert_within(torch.as_tensor(actual), want, tol(torch.float32, mag, terms), "objective")


# ---- advantages: rewards [1,0,0,1 | 1,1,1,1], G = 4 ----
REWARDS = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1])


def test_advantages_group_scale():
    # group 0: mean 0.5, deviations +-0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.5773503
    # A = 0.5 / (0.5773503 + 1e-4) = 0.8658754; group 1 is all-equal -> 0
    a = 0.8658754
    close(grpo.group_advantages(REWARDS, 4), [a, -a, -a, a, 0, 0, 0, 0])


def test_advantages_none_scale():
    # Dr. GRPO: only centred, no std and no eps
    close(grpo.group_advantages(REWARDS, 4, scale="none"), [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_advantages_batch_scale():
    # batch mean 6/8 = 0.75; squared deviations 6 * 0.25^2 + 2 * 0.75^2 = 1.5; var = 1.5 / 7
    # std = 0.4629100; A = 0.5 / (0.4629100 + 1e-4) = 1.0798902
    a = 1.0798902
    close(grpo.group_advantages(REWARDS, 4, scale="batch"), [a, -a, -a, a, 0, 0, 0, 0])


def test_advantages_errors():
    with pytest.raises(ValueError, match="group"):
        grpo.group_advantages(REWARDS, 4, scale="rank")
    with pytest.raises(ValueError, match="groups of 3"):
        grpo.group_advantages(REWARDS, 3)


# ---- ratio, clipping (eps_low = 0.2, eps_high = 0.28) ----


def test_policy_ratio():
    close(grpo.policy_ratio(torch.tensor([[math.log(1.5), 0.0]]), torch.zeros(1, 2)), [[1.5, 1.0]])


def test_clipped_surrogate_both_signs():
    ratio = torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 1.1]])
    adv = torch.tensor([1.0, -1.0])
    out = grpo.clipped_surrogate(ratio, adv, eps_low=0.2, eps_high=0.28)
    # A = +1: -min(1.5, 1.28) = -1.28 (clipped); -min(0.5, 0.8) = -0.5; -min(1.1, 1.1) = -1.1
    # A = -1: -min(-1.5, -1.28) = 1.5; -min(-0.5, -0.8) = 0.8 (clipped); -min(-1.1, -1.1) = 1.1
    close(out, [[-1.28, -0.5, -1.1], [1.5, 0.8, 1.1]])


def test_clip_higher_is_asymmetric():
    ratio, adv = torch.tensor([[1.25]]), torch.tensor([1.0])
    # eps_high = 0.28: 1.25 is inside [0.8, 1.28] -> -1.25; symmetric 0.2 clips it to -1.2
    close(grpo.clipped_surrogate(ratio, adv, 0.2, 0.28), [[-1.25]])
    close(grpo.clipped_surrogate(ratio, adv, 0.2, 0.2), [[-1.2]])


def test_clip_ratio_metric_counts_active_branch_only():
    logp = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]]))
    adv = torch.tensor([1.0, -1.0])
    _, m = grpo.grpo_loss(logp, torch.zeros(2, 2), adv, torch.ones(2, 2), eps_high=0.28)
    # clipped: (1.5, A>0) and (0.5, A<0); not: (0.5, A>0), (1.5, A<0) -> 2 / 4
    assert m["clip_ratio"] == pytest.approx(0.5)
    assert m["ratio_mean"] == pytest.approx(1.0)  # (1.5 + 0.5 + 1.5 + 0.5) / 4
    assert m["kl"] == 0.0


# ---- KL and per-token loss ----


def test_k3_kl():
    logp = torch.zeros(1, 3)
    ref = torch.tensor([[0.0, LOG2, -LOG2]])
    close(grpo.k3_kl(logp, ref), [[0.0, K3_LOG2, K3_MLOG2]])


def test_beta_term_added():
    logp = torch.zeros(1, 2)
    ref = torch.tensor([[LOG2, 0.0]])
    out = grpo.per_token_loss(logp, logp, torch.tensor([1.0]), ref_logp=ref, beta=0.1)
    # ratio 1, A = 1 -> surrogate -1; plus 0.1 * k3: [-1 + 0.03068528, -1 + 0]
    close(out, [[-1 + 0.1 * K3_LOG2, -1.0]])
    with pytest.raises(ValueError, match="ref_logp"):
        grpo.per_token_loss(logp, logp, torch.tensor([1.0]), beta=0.1)


def test_truncated_is_weight_caps_and_detaches():
    old = torch.tensor([[math.log(3.0), math.log(0.5), 0.0]], requires_grad=True)
    w = grpo.truncated_is_weight(old, torch.zeros(1, 3), cap=2.0)
    close(w, [[2.0, 0.5, 1.0]])  # min(3, 2), min(0.5, 2), min(1, 2)
    assert not w.requires_grad


def test_is_weight_scales_surrogate_not_kl():
    logp = torch.zeros(1, 1)
    out = grpo.per_token_loss(
        logp,
        logp,
        torch.tensor([1.0]),
        torch.tensor([[LOG2]]),
        beta=0.1,
        is_weight=torch.tensor([[0.5]]),
    )
    close(out, [[0.5 * -1.0 + 0.1 * K3_LOG2]])


# ---- aggregation on a ragged mask (99 marks masked-out junk) ----
LOSS = torch.tensor([[1.0, 2, 3, 4], [10, 99, 99, 99]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])


def test_aggregate_sequence():
    # (1+2+3+4)/4 = 2.5 and 10/1 = 10 -> mean 6.25
    close(grpo.aggregate(LOSS, MASK, "sequence"), 6.25)
    # an all-masked third sequence contributes 0 but is counted: (2.5 + 10 + 0) / 3
    loss3, mask3 = (
        torch.cat([LOSS, torch.full((1, 4), 7.0)]),
        torch.cat([MASK, torch.zeros(1, 4, dtype=torch.long)]),
    )
    close(grpo.aggregate(loss3, mask3, "sequence"), 12.5 / 3)


def test_aggregate_token_differs_from_sequence():
    # (10 + 10) / 5 tokens = 4.0, not 6.25: the long sequence's tokens weigh as much as the short one's
    close(grpo.aggregate(LOSS, MASK, "token"), 4.0)


def test_aggregate_constant():
    # 20 / (2 sequences * 4 max tokens) = 2.5
    close(grpo.aggregate(LOSS, MASK, "constant", max_completion_len=4), 2.5)
    close(grpo.aggregate(LOSS, MASK, "constant", max_completion_len=4, num_sequences=4), 1.25)
    with pytest.raises(ValueError, match="max_completion_len"):
        grpo.aggregate(LOSS, MASK, "constant")


def test_micro_batches_sum_to_full_batch():
    halves = [(LOSS[:1], MASK[:1]), (LOSS[1:], MASK[1:])]
    # token: 10/5 + 10/5 = 4.0; sequence: 2.5/2 + 10/2 = 6.25; constant: 10/8 + 10/8 = 2.5
    kw = {"num_tokens": 5.0, "num_sequences": 2, "max_completion_len": 4}
    for mode, full in [("token", 4.0), ("sequence", 6.25), ("constant", 2.5)]:
        close(sum(grpo.aggregate(lt, m, mode, **kw) for lt, m in halves), full)
    # without num_tokens each micro-batch normalises by its own count: 10/4 + 10/1 = 12.5
    close(sum(grpo.aggregate(lt, m, "token") for lt, m in halves), 12.5)


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match="constant"):
        grpo.aggregate(LOSS, MASK, "mean")


# ---- gradient with mu = 1 (old = logp.detach(), ratio 1) ----


def test_token_loss_gradient_is_minus_advantage_over_token_count():
    logp = torch.tensor([[-0.3, -1.2, -2.0, -0.7], [-0.1, -0.9, -0.4, -3.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    loss, m = grpo.grpo_loss(logp, logp.detach(), adv, mask, mode="token")
    loss.backward()
    # l = -sum_t rho A M / sum M, d rho / d logp = rho = 1 -> grad = -A_i M_t / 5
    close(logp.grad, [[-0.2, -0.2, -0.2, 0.0], [0.4, 0.4, 0.0, 0.0]])
    close(loss, (-3 * 1.0 + 2 * 2.0) / 5)  # -(1+1+1 - 2-2) / 5 = 0.2
    assert m["clip_ratio"] == 0.0 and m["ratio_mean"] == pytest.approx(1.0)


# ---- DAPO soft overlong punishment: max_len 10, cache 4 -> free up to 6 ----


def test_soft_overlong_penalty():
    lengths = torch.tensor([3, 6, 7, 8, 10, 11])
    # (6 - 7)/4 = -0.25, (6 - 8)/4 = -0.5, (6 - 10)/4 = -1, beyond 10 -> -1
    close(grpo.soft_overlong_penalty(lengths, 10, 4), [0.0, 0.0, -0.25, -0.5, -1.0, -1.0])


def test_kl_metric_is_masked_mean():
    logp = torch.zeros(1, 3)
    ref = torch.tensor([[LOG2, -LOG2, 5.0]])  # last token masked out
    _, m = grpo.grpo_loss(
        logp, logp, torch.tensor([0.0]), torch.tensor([[1, 1, 0]]), ref_logp=ref, beta=0.1
    )
    assert m["kl"] == pytest.approx((K3_LOG2 + K3_MLOG2) / 2)
    # K3_LOG2 + K3_MLOG2 = (2 - log2 - 1) + (0.5 + log2 - 1) = 0.5 -> mean 0.25
    assert m["kl"] == pytest.approx(0.25)


def test_unsynced_metrics_are_the_same_values_as_tensors():
    """sync=False (the trainer's: no read-back per micro-batch) gives the metrics as 0-d tensors
    on the loss's device, equal to the floats, and the same loss."""
    logp = torch.tensor([[-0.3, -1.2, -2.0], [-0.1, -0.9, -0.4]])
    old = torch.tensor([[-0.5, -1.2, -1.0], [-0.1, -0.2, -0.4]])
    ref = torch.tensor([[LOG2, -LOG2, 0.0], [0.0, 0.0, 0.0]])
    args = (logp, old, torch.tensor([1.0, -1.0]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    loss, floats = grpo.grpo_loss(*args, ref_logp=ref, beta=0.1)
    loss_t, tensors = grpo.grpo_loss(*args, ref_logp=ref, beta=0.1, sync=False)
    assert torch.equal(loss, loss_t) and floats.keys() == tensors.keys()
    for k, v in tensors.items():
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and v.item() == floats[k]
    assert floats["clip_ratio"] > 0 and floats["kl"] > 0  # values the comparison exercises
