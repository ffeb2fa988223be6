"""Generation in token ids: the contract (types.py), a sampler, and the engines behind it.

- `paged` (PagedEngine): continuous batching over a paged KV cache with native Qwen2/Qwen3/Llama
  decoders and CUDA graphs; the default wherever the architecture is supported.
- `hf` (HFEngine): a simple KV-cached loop over the `transformers` model, the reference path
  and the fallback for any other architecture.
"""

from __future__ import annotations

from r1kit.engine.types import Engine, RequestOutput, Sample, SamplingParams

KINDS = ("auto", "paged", "hf")


def engine_kind(model, kind: str = "auto") -> str:
    """Which engine `make_engine` builds for `model`: `auto` picks `paged` when the native
    decoder supports the architecture, else `hf`."""
    if kind not in KINDS:
        raise ValueError(f"unknown engine {kind!r}; available: {', '.join(KINDS)}")
    if kind != "hf":
        from r1kit.engine.model import supports

        reason = supports(model.config)
        if reason is None:
            return "paged"
        if kind == "paged":
            raise ValueError(f"the paged engine does not support {reason}; use --engine hf")
    return "hf"


def make_engine(model, pad_token_id: int = 0, kind: str = "auto", **kw) -> Engine:
    """The engine for `model` (`engine_kind`). Keyword arguments go to PagedEngine (kv_memory,
    max_num_seqs, prefix_cache, ...)."""
    if engine_kind(model, kind) == "paged":
        from r1kit.engine.paged import PagedEngine

        return PagedEngine(model, **kw)
    from r1kit.engine.simple import HFEngine

    return HFEngine(model, pad_token_id=pad_token_id)


__all__ = [
    "KINDS",
    "Engine",
    "RequestOutput",
    "Sample",
    "SamplingParams",
    "engine_kind",
    "make_engine",
]
