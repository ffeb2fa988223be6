"""From chat messages to streamed reasoning and answer text, over one shared engine.

Messages -> prompt text through the tokenizer's chat template (earlier assistant turns without
their reasoning; `reasoning_content` sent back is ignored) -> token ids -> the engine: a
PagedEngine behind an AsyncEngine (continuous batching; leaving a stream aborts the request and
frees its KV blocks), or for architectures the paged engine does not support, HFEngine.generate
in a worker thread behind a lock. Tokens are detokenized incrementally (never half a UTF-8
character), cut at stop strings (held back while they may still be forming) and split into
reasoning and answer by `r1kit.chat.ReasoningStream`, which never emits a partial tag.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from r1kit.chat import THINK_CLOSE, THINK_OPEN, split_reasoning
from r1kit.engine import SamplingParams, make_engine
from r1kit.serve.errors import APIError, bad_request, invalid_param
from r1kit.serve.sample_text import Delta, SampleText

__all__ = ["Delta", "Generation", "Generator", "SampleText"]


class Generation:
    """One request in flight: iterate for deltas; afterwards `samples` hold the results."""

    def __init__(self, gen: Generator, prompt_ids, params: SamplingParams, think: bool | None,
                 stop: tuple[str, ...]) -> None:  # fmt: skip
        self.gen, self.prompt_ids, self.params = gen, prompt_ids, params
        self.samples = [SampleText(gen.tok, think, stop) for _ in range(params.n)]
        self.prompt_cache_hit_tokens = 0  # prompt tokens the engine's prefix cache had
        self._source = gen._open(prompt_ids, params)  # raises 503 now, before any response

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return sum(len(s.ids) for s in self.samples)

    @property
    def reasoning_tokens(self) -> int:
        return sum(s.reasoning_tokens(self.gen.think_close_id) for s in self.samples)

    async def __aiter__(self) -> AsyncIterator[list[Delta]]:
        try:
            async for out, finished in self._source:
                self.prompt_cache_hit_tokens = out.num_cached_tokens
                deltas = []
                for j, (s, o) in enumerate(zip(self.samples, out.samples)):
                    # an unfinished sample reads "length" until its request is done
                    done = finished or o.finish_reason in ("stop", "abort")
                    reason = "stop" if o.finish_reason == "abort" else o.finish_reason
                    d = s.add(o.token_ids, reason if done else None)
                    if d is not None:
                        d.index = j
                        deltas.append(d)
                if deltas:
                    yield deltas
                if all(s.finish_reason for s in self.samples):
                    break  # every sample hit a stop string: leaving aborts the request
        finally:
            await self._source.aclose()

    async def run(self) -> Generation:
        async for _ in self:
            pass
        return self


class Generator:
    """The model, its tokenizer and the engine behind every route."""

    def __init__(self, model, tokenizer, name: str, engine: str = "auto",
                 max_waiting: int | None = 64, **engine_kw) -> None:  # fmt: skip
        from r1kit.engine.async_engine import AsyncEngine
        from r1kit.engine.paged import PagedEngine

        self.model, self.tok, self.name = model, tokenizer, name
        eng = make_engine(model, tokenizer.pad_token_id or 0, kind=engine, **engine_kw)
        self.paged = isinstance(eng, PagedEngine)
        self.engine = AsyncEngine(eng, max_waiting) if self.paged else eng
        self.max_waiting = max_waiting
        cfg_len = getattr(model.config, "max_position_embeddings", 4096)
        self.max_model_len = eng.max_model_len if self.paged else cfg_len
        self.eos_ids = _eos_ids(model, tokenizer)
        self.think_close_id = _single_token(tokenizer, THINK_CLOSE)
        self._lock = threading.Lock()  # HFEngine: one generate at a time
        self._busy = 0

    # ------------------------------------------------------------------ prompts
    def render(self, messages: list[dict], think: bool = True) -> str:
        """The prompt: earlier reasoning stripped, generation prompt added; with think off,
        the think block is opened and closed empty so the model answers directly."""
        msgs = []
        for m in messages:
            content = m.get("content") or ""
            if m.get("role") == "assistant" and THINK_CLOSE in content:
                content = split_reasoning(content)[1] or ""
            msgs.append({"role": m["role"], "content": content})
        prompt = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if not think:
            prompt = prompt + ("" if prompt.endswith("\n") else "\n") + THINK_CLOSE + "\n\n"
            if THINK_OPEN not in prompt[-40:]:
                prompt = prompt[: -len(THINK_CLOSE) - 2]  # the template does not think
        return prompt

    def encode(self, prompt: str) -> list[int]:
        return list(self.tok(prompt, add_special_tokens=False)["input_ids"])

    def params(self, prompt_len: int, max_tokens: int | None, n: int = 1, temperature=0.6,
               top_p=0.95, seed: int | None = None, ignore_eos: bool = False) -> SamplingParams:  # fmt: skip
        """SamplingParams for a prompt, or the error the client gets: 400 when the prompt does
        not fit the context, 422 for max_tokens past the context (it is otherwise clamped to
        what the context has left)."""
        room = self.max_model_len - prompt_len
        if room < 1:
            raise bad_request(
                f"the prompt has {prompt_len} tokens; this model's context is "
                f"{self.max_model_len} tokens",
                "messages",
            )
        if max_tokens is not None and max_tokens > self.max_model_len:
            raise invalid_param(
                f"max_tokens must be at most {self.max_model_len} (the context length)",
                "max_tokens",
            )
        if n > (self.engine.engine.max_num_seqs if self.paged else 64):
            raise invalid_param("n is larger than the engine serves at once", "n")
        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=min(max_tokens or room, room),
            stop_token_ids=() if ignore_eos else self.eos_ids,
            seed=seed,
        )

    def start(self, prompt_ids, params: SamplingParams, think: bool | None = True,
              stop: tuple[str, ...] = ()) -> Generation:  # fmt: skip
        return Generation(self, prompt_ids, params, think, tuple(s for s in stop if s))

    # ------------------------------------------------------------------ engines
    def _open(self, prompt_ids, params: SamplingParams):
        if self.paged:
            try:
                rid, q = self.engine.add(prompt_ids, params)
            except OverflowError:
                raise APIError(503, "the server is overloaded; retry later",
                               code="server_overloaded", headers={"retry-after": "1"}) from None  # fmt: skip
            return _paged_stream(self.engine, rid, q)
        if self.max_waiting is not None and self._busy > self.max_waiting:
            raise APIError(503, "the server is overloaded; retry later", code="server_overloaded")
        return self._hf_stream(prompt_ids, params)

    async def _hf_stream(self, prompt_ids, params):
        self._busy += 1
        try:
            out = await asyncio.to_thread(self._hf_generate, prompt_ids, params)
        finally:
            self._busy -= 1
        yield out, True

    def _hf_generate(self, prompt_ids, params):
        with self._lock:
            return self.engine.generate([prompt_ids], params)[0]

    def describe(self) -> dict:
        """What /api/tags and /api/show report about the model (GGUFGenerator has its own)."""
        cfg, params = self.model.config, list(self.model.parameters())
        info = {f"{cfg.model_type}.{k}": v for k, v in cfg.to_dict().items()
                if isinstance(v, (int, float, str)) and not isinstance(v, bool)}  # fmt: skip
        return {
            "family": getattr(cfg, "model_type", "unknown"),
            "format": "safetensors",
            "parameters": sum(p.numel() for p in params),
            "size": sum(p.numel() * p.element_size() for p in params),
            "quantization_level": str(self.model.dtype).split(".")[-1],
            "model_info": info,
        }

    def stats(self) -> dict:
        if not self.paged:
            return {"engine": "hf", "busy": self._busy}
        e = self.engine.engine
        return {
            "engine": "paged",
            "running": self.engine.num_running,
            "waiting": self.engine.num_waiting,
            "requests": len(e.requests),
            "free_blocks": e.alloc.num_free,
            "total_blocks": e.alloc.num_blocks,
        }

    def close(self) -> None:
        if self.paged:
            self.engine.close()


async def _paged_stream(aeng, rid: str, q: asyncio.Queue):
    """AsyncEngine.stream after its add(): deltas until finished; leaving early aborts."""
    from r1kit.engine.async_engine import next_delta

    done = False
    try:
        while not done:
            item, done = await next_delta(q)  # deltas queued meanwhile arrive merged
            if isinstance(item, Exception):
                raise APIError(500, f"the engine failed: {item}")
            yield item, done
    finally:
        if not done:
            aeng.abort(rid)


def _eos_ids(model, tok) -> tuple[int, ...]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    ids |= set(e) if isinstance(e, list) else ({e} if e is not None else set())
    return tuple(sorted(ids))


def _single_token(tok, text: str) -> int | None:
    ids = tok.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None
