"""The decoder's elementwise pieces, fused by torch.compile on CUDA.

A decode step at batch 512 is bound by kernel count, not bytes: eager RMSNorm alone is ~7 small
kernels, rotary embedding ~10, so a 24-layer model launched ~1,000 kernels per token. Compiling
these small pure functions (dynamic shapes, so one compile serves every batch size) turns each
into one or two Triton kernels; the CUDA graph then replays ~15 kernels per layer. Off CUDA, or
with R1KIT_COMPILE=0, the same functions run eagerly.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """As transformers computes it: normalise in fp32, cast back, then scale."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def add_rms_norm(
    h: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add, then the next norm: (h + x, rms_norm(h + x))."""
    h = h + x
    return h, rms_norm(h, w, eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D]; cos/sin [T, D] with the two halves repeated (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat((-x2, x1), dim=-1) * sin[:, None]


def rope_qk(q, k, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    return rotate(q, cos, sin), rotate(k, cos, sin)


def silu_mul(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return F.silu(g) * u


@functools.cache
def _compiled(name: str):
    fn = globals()[name]
    return torch.compile(fn, dynamic=True, fullgraph=True)


def ops(device: torch.device) -> dict:
    """name -> callable: compiled on CUDA (unless R1KIT_COMPILE=0), eager elsewhere."""
    names = ("rms_norm", "add_rms_norm", "rope_qk", "silu_mul")
    if device.type == "cuda" and os.environ.get("R1KIT_COMPILE", "1") != "0":
        return {n: _compiled(n) for n in names}
    return {n: globals()[n] for n in names}
