"""From chat messages to streamed reasoning and answer text, over one shared engine.

Messages -> prompt text through the tokenizer's chat template (earlier assistant turns without
their reasoning; `reasoning_content` sent back is ignored) -> token ids -> the engine, through
the one async interface every engine has (`r1kit.engine.streaming.StreamingEngine`): the paged
engine in a process of its own (core.py: its step loop never waits on this process's HTTP
work; leaving a stream aborts the request and frees its KV blocks), HFEngine for architectures
the paged engine does not support, or llama.cpp (llamacpp.py), both on worker threads. Tokens
are detokenized here, incrementally (never half a UTF-8 character), one batch of tokens per
delta when the client falls behind, cut at stop strings (held back while they may still be
forming) and split into reasoning and answer by `r1kit.chat.ReasoningStream`, which never emits
a partial tag.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from r1kit.chat import THINK_CLOSE, encode_prompt, render_chat, set_template, template_of
from r1kit.engine import SamplingParams, make_streaming_engine
from r1kit.engine.core import EngineStopped
from r1kit.engine.streaming import StreamingEngine
from r1kit.serve.errors import APIError, bad_request, invalid_param
from r1kit.serve.sample_text import Delta, SampleText

__all__ = ["Delta", "Generation", "Generator", "ModelCard", "SampleText"]


@dataclass(frozen=True)
class ModelCard:
    """What the routes need to know of a torch model besides its engine: its end-of-sequence
    ids and what /api/tags and /api/show report. An API worker process gets this, not the
    weights (serve/workers.py)."""

    eos_ids: tuple[int, ...]
    description: dict

    @classmethod
    def of(cls, model, tokenizer) -> ModelCard:
        cfg, params = model.config, list(model.parameters())
        info = {
            f"{cfg.model_type}.{k}": v
            for k, v in cfg.to_dict().items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)
        }
        description = {
            "family": getattr(cfg, "model_type", "unknown"),
            "format": "safetensors",
            "parameters": sum(p.numel() for p in params),
            "size": sum(p.numel() * p.element_size() for p in params),
            "quantization_level": str(model.dtype).split(".")[-1],
            "model_info": info,
        }
        return cls(_eos_ids(model, tokenizer), description)


class Generation:
    """One request in flight: iterate for deltas; afterwards `samples` hold the results."""

    def __init__(
        self,
        gen: Generator,
        prompt_ids,
        params: SamplingParams,
        think: bool | None,
        stop: tuple[str, ...],
    ) -> None:
        self.gen, self.prompt_ids, self.params = gen, prompt_ids, params
        # an R1-Zero model's answer ends at </answer>, unless the client asked to ignore the end
        stop_at_answer = bool(params.stop_token_ids)
        self.samples = [
            SampleText(gen.tok, think, stop, gen.answer_tags, stop_at_answer)
            for _ in range(params.n)
        ]
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

    def __init__(
        self,
        model,
        tokenizer,
        name: str,
        engine: str = "auto",
        max_waiting: int | None = 64,
        backend: StreamingEngine | None = None,
        process: bool = True,
        card: ModelCard | None = None,
        **engine_kw,
    ) -> None:
        """`model` is a torch model run by r1kit's engine (`engine`, `process` and the
        keyword arguments choose it: `make_streaming_engine`), or None with `backend`, an
        engine already built (llama.cpp; or an API worker's client of the engine core, with
        the model's `card`)."""
        self.model, self.tok, self.name = model, tokenizer, name
        if card is None and model is not None:
            card = ModelCard.of(model, tokenizer)
        self.card = card
        if backend is None:
            backend = make_streaming_engine(
                model, tokenizer.pad_token_id or 0, engine, max_waiting, process, **engine_kw
            )
        self.engine: StreamingEngine = backend
        self.max_waiting = max_waiting
        self.max_model_len = backend.max_model_len
        self.eos_ids = card.eos_ids if card is not None else _eos_ids(None, tokenizer)
        self.think_close_id = _single_token(tokenizer, THINK_CLOSE)
        self.answer_tags = template_of(tokenizer) == "r1zero"  # content: inside <answer>

    @property
    def paged(self) -> bool:
        return self.engine.kind == "paged"

    # ------------------------------------------------------------------ prompts
    def use_template(self, template: str) -> None:
        """Render chats in `template` ("r1zero" | "chat") instead of the model's own format."""
        set_template(self.tok, template)
        self.answer_tags = template_of(self.tok) == "r1zero"

    def render(self, messages: list[dict], think: bool = True) -> str:
        """The prompt in the model's chat template (`chat.render_chat`)."""
        return render_chat(self.tok, messages, think)

    def encode(self, prompt: str) -> list[int]:
        return encode_prompt(self.tok, prompt)

    def params(
        self,
        prompt_len: int,
        max_tokens: int | None,
        n: int = 1,
        temperature=0.6,
        top_p=0.95,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> SamplingParams:
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
        if n > self.engine.max_num_seqs:
            raise invalid_param("n is larger than the engine serves at once", "n")
        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=min(max_tokens or room, room),
            stop_token_ids=() if ignore_eos else self.eos_ids,
            seed=seed,
        )

    def start(
        self,
        prompt_ids,
        params: SamplingParams,
        think: bool | None = True,
        stop: tuple[str, ...] = (),
    ) -> Generation:
        return Generation(self, prompt_ids, params, think, tuple(s for s in stop if s))

    # ------------------------------------------------------------------ engines
    def _open(self, prompt_ids, params: SamplingParams):
        """The engine's (delta, finished) stream, queued now: a full queue is 503 before any
        response; an engine failure later is a 500 in the error shape."""
        try:
            src = self.engine.open(prompt_ids, params)
        except EngineStopped as e:
            raise _stopped(e) from None
        except OverflowError:
            raise APIError(
                503,
                "the server is overloaded; retry later",
                code="server_overloaded",
                headers={"retry-after": "1"},
            ) from None
        return _api_errors(src, self.engine.kind)

    def describe(self) -> dict:
        """What /api/tags and /api/show report about the model (GGUFGenerator has its own)."""
        assert self.card is not None
        return self.card.description

    def stats(self) -> dict:
        return self.engine.stats()

    def close(self) -> None:
        self.engine.close()


async def _api_errors(src, kind: str):
    """The engine's stream with its failures as 500s; closing it aborts the request."""
    try:
        async for item in src:
            yield item
    except ValueError as e:  # a prompt the engine refused
        raise bad_request(str(e), "messages") from None
    except EngineStopped as e:  # Ctrl-C: not a failure of the engine
        raise _stopped(e) from None
    except Exception as e:
        raise APIError(500, f"the {kind} engine failed: {e}") from None
    finally:
        await src.aclose()


def _stopped(e: EngineStopped) -> APIError:
    return APIError(503, str(e), code="server_shutting_down")


def _eos_ids(model, tok) -> tuple[int, ...]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    ids |= set(e) if isinstance(e, list) else ({e} if e is not None else set())
    return tuple(sorted(ids))


def _single_token(tok, text: str) -> int | None:
    ids = tok.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None
