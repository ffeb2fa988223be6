"""Floating-point tolerances for tests, derived from the dtype, the magnitude of the values compared
and the number of rounded operations accumulated into each, so that a test holds on every CPU
kernel family (AVX-512, AVX2, scalar: `ATEN_CPU_CAPABILITY`) and every summation order (SIMD
width, blocking, FSDP shards, packed rows), instead of fitting the one machine it was written on.

The bound is Higham & Mary's probabilistic rounding-error bound ("A new approach to probabilistic
rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019): a value computed through `terms`
rounded operations with unit roundoff u = eps/2 is off its exact value by at most
λ·√terms·u·magnitude, with probability at least 1 − 2·terms·exp(−λ²/2), whatever order the sums
are taken in (the worst case grows like terms·u and is never reached by real kernels). λ = 7 puts
that failure probability below 1e-6 for the 10⁵ operations of the tiny model. `magnitude` is
the largest absolute value in the computation's output; normalisation layers (RMSNorm) keep the
intermediate activations of the size of their outputs, so their condition numbers are taken as 1.
"""

from __future__ import annotations

import math

import torch

LAMBDA = 7.0


def tol(dtype: torch.dtype, magnitude: float, terms: int, lam: float = LAMBDA) -> float:
    """Absolute bound on the rounding error of one value of size up to `magnitude` computed in
    `dtype` through `terms` accumulated rounded operations."""
    u = torch.finfo(dtype).eps / 2
    return lam * math.sqrt(terms) * u * float(magnitude)


def diff_tol(dtype: torch.dtype, magnitude: float, terms: int) -> float:
    """Bound on the difference of two computations of the same value in different orders: each is
    within `tol` of the exact value."""
    return 2 * tol(dtype, magnitude, terms)


def decoder_terms(config, seq_len: int, backward: bool = False, tokens: int = 1) -> int:
    """Rounded operations on the path to one log-prob of a transformers decoder `config` over
    sequences of `seq_len` tokens. Per layer: two RMSNorms (hidden each), the q/k/v projections
    (hidden), the attention scores (head_dim), the softmax sum and the weighted values (seq_len
    each), the output projection (hidden), the MLP's gate/up (hidden) and down (intermediate)
    projections, two residual adds; then the final norm, the LM head (hidden) and the log-sum-exp
    over the vocabulary. `backward`: the gradient of a weight runs the chain back again and sums
    over the `tokens` positions of the batch."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    d = getattr(config, "head_dim", None) or h // config.num_attention_heads
    layer = 2 * h + h + d + 2 * seq_len + h + h + i + 2
    fwd = config.num_hidden_layers * layer + h + h + v
    return 2 * fwd + tokens if backward else fwd


def adam_step_tol(
    state: dict,
    grad_tol: float,
    weight: torch.Tensor,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.Tensor:
    """Elementwise bound on the difference of two Adam(W) steps t taken from the same state whose
    gradients differ by at most `grad_tol`; `state` is the reference optimizer's state of the
    weight after the step ("step", "exp_avg" m, "exp_avg_sq" v), `weight` its updated value.

    The step is lr·A/D, A = m/(1 − β1^t), D = √v/√(1 − β2^t) + eps. A gradient changed by e moves
    m by (1 − β1)·e and √v by at most √(1 − β2)·|e| (√(c + (1 − β2)g²) is √(1 − β2)-Lipschitz in
    g), so with D_min the smallest D within that reach, |Δ(A/D)| <= |ΔA|/D_min + |A|·|ΔD|/D_min².
    A gradient within its rounding of zero (D_min = eps) gets a bound of its whole step: its sign
    is not determined. Adds the rounding of the update itself (a few operations on |w| + lr)."""
    b1, b2 = betas
    t = int(state["step"])
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    m, v = state["exp_avg"].detach().double(), state["exp_avg_sq"].detach().double()
    d_sqrt_v = math.sqrt((1 - b2) / bc2) * grad_tol
    d_min = (v.sqrt() / math.sqrt(bc2) - d_sqrt_v).clamp(min=0) + eps
    d_a = (1 - b1) * grad_tol / bc1
    step = d_a / d_min + m.abs() / bc1 * d_sqrt_v / d_min**2
    u = torch.finfo(weight.dtype).eps / 2
    return lr * step + 4 * u * (weight.detach().abs().double() + lr)


def adam_grad_bound(state: dict, beta2: float) -> float:
    """The largest |gradient| the last Adam step can have taken: v >= (1 − β2)·g²."""
    return float((state["exp_avg_sq"].detach().double() / (1 - beta2)).sqrt().max())


def assert_within(got: torch.Tensor, want: torch.Tensor, bound, msg: str = "") -> None:
    """|got − want| <= bound elementwise (bound: a float or a tensor), reporting the worst element
    with its bound."""
    err = (got.detach().double() - want.detach().double()).abs()
    bound_t = torch.as_tensor(bound, dtype=torch.float64).expand_as(err)
    excess = err - bound_t
    if excess.numel() and excess.max() > 0:
        k = int(excess.argmax())
        raise AssertionError(
            f"{msg}: |difference| {err.flatten()[k].item():.3g} > bound "
            f"{bound_t.flatten()[k].item():.3g} at flat index {k} "
            f"({int((excess > 0).sum())} of {err.numel()} elements out of bounds)"
        )
