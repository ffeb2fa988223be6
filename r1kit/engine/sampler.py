"""Per-row sampling with counter-based noise: temperature, top-k, top-p, min-p, log-probs.

Sampling is Gumbel-max: token = argmax(logits / T + g) with g = -log(-log u). The uniform u of
row b, vocabulary entry v comes from an integer hash of (row seed, step, v) instead of a stateful
generator, so
- a seeded request gives the same samples whatever else is in the batch, on any engine;
- the whole batch is one vectorised op (no per-row generator loop), and on CUDA one fused Triton
  kernel reads the logits once (r1kit/engine/triton_sample.py computes the same hash bit for bit).
Filters (top-k, top-p, min-p) become one threshold per row on the scaled logits; tokens at or
above it stay. Rows at a tie with the threshold all stay, so top-k can keep more than k tokens
when logits tie exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# the Triton kernel imports triton (optional, CUDA only) when first built, not at import
from r1kit.engine.triton_sample import triton_available, triton_sample, triton_top_p

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # the multiplier of a well-mixing 32-bit integer hash
_GOLD = 0x61C88647  # 2^32 / golden ratio, mod 2^32 (kept < 2^31 so Triton treats it as int32)
_STEP = 0x2C1B3C6D
U_MAX = 1.0 - 2.0**-24  # the largest float32 below 1 (the Triton kernel clamps to it too)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """32-bit avalanche hash on int64 tensors holding values in [0, 2^32); products stay < 2^59."""
    x = (((x >> 16) ^ x) * _MUL) & M32
    x = (((x >> 16) ^ x) * _MUL) & M32
    return (x >> 16) ^ x


def row_seed(seed: int, sample_index: int) -> int:
    """The seed of sample j of a request with `seed` (same formula in every engine)."""
    return (seed * 1_000_003 + sample_index) % (1 << 32)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """[B] int64 key per row for this step (the index of the token being sampled)."""
    return _mix((_mix(seeds & M32) + steps * _STEP) & M32)


def gumbel(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B, V] Gumbel noise from the counter hash."""
    idx = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    h = _mix(_mix((keys[:, None] + idx * _GOLD) & M32))
    # (2^24 - 1) + 0.5 is not a float32: it rounds to 2^24, u to 1 and the noise to +inf, which
    # then won the argmax of a sampled row whatever its logits, and made a greedy row's score
    # inf * 0 = NaN, which argmax takes (once in 2^24 entries: about 1 step in 110 over a
    # 152k vocabulary). U_MAX keeps u below 1 and changes no other draw.
    u = (((h >> 8).float() + 0.5) * 2.0**-24).clamp(max=U_MAX)
    return -torch.log(-torch.log(u))


@dataclass
class SamplingRows:
    """Per-row sampling parameters of one batch, as tensors on the logits' device."""

    temperature: torch.Tensor  # [B] float; 0 = greedy
    top_p: torch.Tensor  # [B] float
    top_k: torch.Tensor  # [B] long; 0 = off
    min_p: torch.Tensor  # [B] float
    seeds: torch.Tensor  # [B] int64 row seeds
    steps: torch.Tensor  # [B] int64 tokens sampled so far by the row
    filtered: list[int]  # rows with a top-k, top-p or min-p filter (known without a sync)
    max_top_k: int = 0

    @classmethod
    def build(cls, params: list, seeds: list[int], steps: list[int], device) -> SamplingRows:
        def t(vals, dtype):
            return torch.tensor(vals, dtype=dtype).to(device, non_blocking=True)

        filt = [i for i, p in enumerate(params) if p.top_p < 1 or p.top_k > 0 or p.min_p > 0]
        return cls(
            t([p.temperature for p in params], torch.float32),
            t([p.top_p for p in params], torch.float32),
            t([p.top_k for p in params], torch.int64),
            t([p.min_p for p in params], torch.float32),
            t(seeds, torch.int64),
            t(steps, torch.int64),
            filt,
            max((p.top_k for p in params), default=0),
        )


TOPK_FIRST = 256  # the nucleus is looked for in the top 256 first; a full sort only if needed


def thresholds(scaled: torch.Tensor, rows: SamplingRows) -> torch.Tensor:
    """[B] lowest scaled logit each row keeps (-inf where no filter applies).

    A full sort of [B, 152k] logits per step would cost more than the model's forward, so the
    cut-offs come from the top K (>= 256 and >= the largest top-k) entries; only rows whose
    nucleus reaches past them are sorted in full (one device sync to find them). This is the
    path off CUDA; on CUDA `fused_thresholds` gives the same cut-offs with no sort and no sync.
    """
    B, V = scaled.shape
    th = torch.full((B,), float("-inf"), device=scaled.device)
    if not rows.filtered:
        return th
    idx = torch.tensor(rows.filtered, device=scaled.device)
    s = scaled[idx]  # [R, V]
    top_k, top_p, min_p = rows.top_k[idx], rows.top_p[idx], rows.min_p[idx]
    K = min(V, max(TOPK_FIRST, rows.max_top_k))
    vals = s.topk(K, dim=-1).values  # [R, K] descending
    th_k = torch.where(top_k > 0, vals.gather(1, (top_k.clamp(1, K) - 1)[:, None])[:, 0], -1e30)
    probs = (vals - s.logsumexp(-1, keepdim=True)).exp()
    cum = probs.cumsum(-1)
    # nucleus: the smallest prefix whose mass reaches top_p (the top token always stays)
    kept = ((cum - probs) < top_p[:, None]).sum(-1).clamp(1, K)
    th_p = vals.gather(1, (kept - 1)[:, None])[:, 0]
    beyond = (cum[:, -1] < top_p) & (top_p < 1)
    if K < V and bool(beyond.any()):
        r = beyond.nonzero()[:, 0]
        full = s[r].sort(dim=-1, descending=True).values
        fp = full.softmax(-1)
        n = ((fp.cumsum(-1) - fp) < top_p[r, None]).sum(-1).clamp(min=1)
        th_p[r] = full.gather(1, (n - 1)[:, None])[:, 0]
    th_p = torch.where(top_p < 1, th_p, -1e30)
    th_m = torch.where(min_p > 0, vals[:, 0] + min_p.clamp(min=1e-30).log(), -1e30)
    th[idx] = torch.maximum(torch.maximum(th_k, th_p), th_m)
    return th


def sample(logits: torch.Tensor, rows: SamplingRows) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] (any float dtype) -> (tokens [B] long, logprobs [B] float32).

    Log-probs are of the temperature-scaled distribution before filtering, which is what the GRPO
    ratio needs (DESIGN.md section 4); greedy rows report log-probs at temperature 1.
    """
    greedy = rows.temperature <= 0
    inv_t = torch.where(greedy, 1.0, 1.0 / rows.temperature.clamp(min=1e-6))
    noise = (~greedy).float()
    keys = row_keys(rows.seeds, rows.steps)
    if logits.is_cuda and triton_available():
        th = torch.full_like(inv_t, float("-inf"))
        if rows.filtered:
            th = fused_thresholds(logits, inv_t, rows)
        return triton_sample(logits, inv_t, noise, th, keys)
    th = None
    if rows.filtered:
        th = thresholds(logits.float() * inv_t[:, None], rows)
    return sample_reference(logits, inv_t, noise, th, keys)


def fused_thresholds(logits: torch.Tensor, inv_t: torch.Tensor, rows: SamplingRows):
    """`thresholds` on CUDA with no sort and no host sync (the decode step stays pipelined):
    top-p and min-p from one Triton kernel (triton_sample.triton_top_p), top-k from a top-k of
    the raw logits (x -> x * inv_t is increasing, so the same entries and, scaled in float32
    as in `sample`, the same values)."""
    th, mx = triton_top_p(logits, inv_t, rows.top_p, rows.min_p)
    th_m = torch.where(rows.min_p > 0, mx + rows.min_p.clamp(min=1e-30).log(), float("-inf"))
    th = torch.maximum(th, th_m)
    if rows.max_top_k:
        K = min(logits.shape[1], rows.max_top_k)
        vals = logits.topk(K, dim=-1).values.float() * inv_t[:, None]
        kth = vals.gather(1, (rows.top_k.clamp(1, K) - 1)[:, None])[:, 0]
        th = torch.maximum(th, torch.where(rows.top_k > 0, kth, float("-inf")))
    return th


def sample_reference(logits, inv_t, noise, th, keys) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain-torch path (CPU, or CUDA without Triton); the Triton kernel matches it."""
    scaled = logits.float() * inv_t[:, None]
    score = scaled + gumbel(keys, scaled.shape[1]) * noise[:, None]
    if th is not None:
        score = score.masked_fill(scaled < th[:, None], float("-inf"))
    tok = score.argmax(-1)
    lp = scaled.gather(1, tok[:, None])[:, 0] - scaled.logsumexp(-1)
    return tok, lp
