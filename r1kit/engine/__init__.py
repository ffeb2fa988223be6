"""Generation in token ids: the contract (types.py), a sampler, and the engines behind it."""

from __future__ import annotations

from r1kit.engine.types import Engine, RequestOutput, Sample, SamplingParams


def make_engine(model, pad_token_id: int = 0, kind: str = "hf") -> Engine:
    """The engine for `model`; `hf` is the simple KV-cached sampler over transformers."""
    from r1kit.engine.simple import HFEngine

    if kind != "hf":
        raise ValueError(f"unknown engine {kind!r}; available: hf")
    return HFEngine(model, pad_token_id=pad_token_id)


__all__ = ["Engine", "RequestOutput", "Sample", "SamplingParams", "make_engine"]
