"""Generation in token ids: the contract (types.py), a sampler, and the engines behind it.

- `paged` (PagedEngine): continuous batching over a paged KV cache with native Qwen2/Qwen3/Llama
  decoders and CUDA graphs; the default wherever the architecture is supported.
- `hf` (HFEngine): a simple KV-cached loop over the `transformers` model, the reference path
  and the fallback for any other architecture.

`make_engine` builds the one for a model; `make_streaming_engine` the server's async
`StreamingEngine` over it (streaming.py).
"""

from __future__ import annotations

from r1kit.engine.async_engine import AsyncEngine
from r1kit.engine.core import EngineProcess
from r1kit.engine.model import supports
from r1kit.engine.paged import PagedEngine
from r1kit.engine.simple import HFEngine
from r1kit.engine.streaming import StreamingEngine, ThreadedEngine
from r1kit.engine.types import Engine, RequestOutput, Sample, SamplingParams

KINDS = ("auto", "paged", "hf")


def engine_kind(model, kind: str = "auto") -> str:
    """Which engine `make_engine` builds for `model`: `auto` picks `paged` when the native
    decoder supports the architecture, else `hf`."""
    if kind not in KINDS:
        raise ValueError(f"unknown engine {kind!r}; available: {', '.join(KINDS)}")
    if kind != "hf":
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
        return PagedEngine(model, **kw)
    return HFEngine(model, pad_token_id=pad_token_id)


def make_streaming_engine(
    model,
    pad_token_id: int = 0,
    kind: str = "auto",
    max_waiting: int | None = 64,
    process: bool = True,
    **engine_kw,
) -> StreamingEngine:
    """The server's engine for a torch model: the paged engine in a process of its own
    (`process=False`: on a thread of this one), or for architectures it does not support,
    HFEngine.generate on a worker thread. Keyword arguments go to PagedEngine."""
    if engine_kind(model, kind) == "paged":
        if process:
            return EngineProcess(model, max_waiting, **engine_kw)
        return AsyncEngine(PagedEngine(model, **engine_kw), max_waiting)
    hf = make_engine(model, pad_token_id, kind="hf")

    def run(prompt_ids, params, stop, put) -> None:
        put((hf.generate([prompt_ids], params)[0], True))

    max_len = getattr(model.config, "max_position_embeddings", 4096)
    return ThreadedEngine(run, "hf", max_len, max_waiting=max_waiting)


__all__ = [
    "KINDS",
    "Engine",
    "RequestOutput",
    "Sample",
    "SamplingParams",
    "engine_kind",
    "make_engine",
    "make_streaming_engine",
]
