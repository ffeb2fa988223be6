"""From a parsed request to a running Generation without stalling the event loop or
overspending a key: the prompt's size checked before any tokenizing, tokenizing in a worker
thread, the context limit answered as OpenAI words it, the key's
quota reserved, and the request aborted when a non-streaming client leaves.

ids = await encode(gen, chars, lambda: gen.encode(gen.render(msgs, think)), "messages")
ticket = admit(request, len(ids), params)          # 402, or params with max_tokens clamped
g = ticket.start(lambda p: gen.start(ids, p, think, stops))
...; ticket.settle(g, "chat")                      # usage row, running totals, reservation
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from r1kit.engine import SamplingParams
from r1kit.serve.errors import APIError
from r1kit.serve.store import NO_KEY

_MAX_TOKEN_CHARS: dict[int, int | None] = {}


def max_token_chars(tok) -> int | None:
    """The most characters one token of `tok` can stand for (None: unknown), so a text of
    c characters has at least c / this many tokens, whatever the tokenizer makes of it."""
    if id(tok) not in _MAX_TOKEN_CHARS:
        try:
            # byte-level and sentencepiece vocabularies spell a token with one symbol per byte
            # (or per character), so the longest spelling bounds the characters of any token
            vocab = tok.get_vocab()
            _MAX_TOKEN_CHARS[id(tok)] = max(len(t) for t in vocab) if vocab else None
        except Exception:  # a tokenizer without a vocabulary listing (llama.cpp's)
            _MAX_TOKEN_CHARS[id(tok)] = None
    return _MAX_TOKEN_CHARS[id(tok)]


def context_error(max_len: int, tokens: int, param: str, at_least: bool = False) -> APIError:
    """OpenAI's wording and code, which LiteLLM (ContextWindowExceededError) recognises; with
    openai>=3 an exception's text is the message alone, so LangChain, which looks for the
    code there, finds its other marker instead: "prompt is too long" (ContextOverflowError)."""
    what = "messages" if param == "messages" else "prompt"
    n = f"at least {tokens}" if at_least else str(tokens)
    return APIError(
        400,
        f"This model's maximum context length is {max_len} tokens. However, your {what} "
        f"resulted in {n} tokens: the prompt is too long. Please reduce the length of the "
        f"{what}.",
        param,
        "context_length_exceeded",
    )


# A prompt this short (in at most INLINE_PARTS messages) is rendered and tokenized on the
# event loop; 0: every prompt goes to a worker thread, as DESIGN.md section 5 asks ("never
# tokenize on the event loop"). With one API process the event loop bounded the server and a
# thread hand-off cost it about as much as a short prompt's 0.1-0.3 ms of work, so prompts up
# to 1,024 characters were tokenized inline; with several API processes (serve/workers.py)
# each loop has a fraction of the requests: on the H200 at 128 streams inline tokenizing gave a
# first token after 0.07 s against 0.08 s with four API processes (the CUDA default), while it
# still helped one (0.13 against 0.21 s); bench/results/serve_load_gpu.json, "ab".
INLINE_CHARS = 0
INLINE_PARTS = 16


async def encode(
    gen, chars: int, build: Callable[[], list[int]], param: str, parts: int = 1
) -> list[int]:
    """The prompt's token ids from `build` (template + tokenizer); a text of `chars`
    characters in `parts` messages that cannot fit the context is refused before that. It
    runs in a worker thread (up to `INLINE_CHARS` characters in `INLINE_PARTS` messages: here),
    so no prompt stalls the event loop."""
    per = max_token_chars(gen.tok)
    if per and chars >= gen.max_model_len * per:
        raise context_error(gen.max_model_len, math.ceil(chars / per), param, at_least=True)
    if chars <= INLINE_CHARS and parts <= INLINE_PARTS:
        ids = build()
    else:
        ids = await asyncio.to_thread(build)
    if len(ids) >= gen.max_model_len:
        raise context_error(gen.max_model_len, len(ids), param)
    return ids


class Ticket:
    """A request's reservation against its key; `settle` records what it used, once."""

    def __init__(self, request: Request, prompt_tokens: int, params: SamplingParams) -> None:
        state = request.app.state
        self.store, self.model = state.store, state.gen.name
        key = getattr(request.state, "key", None)
        self.key_id = key.id if key is not None else NO_KEY
        self.prompt_tokens, self.params, self.reserved = prompt_tokens, params, None
        if key is not None and (key.quota_tokens is not None or key.credit is not None):
            granted = self.store.reserve(key.id, prompt_tokens, params.n, params.max_tokens)
            if granted < 1:
                raise APIError(
                    402,
                    "this key's balance cannot pay for this request: "
                    f"{key.tokens_left() if key.credit is None else 'its credit'} left, "
                    f"the prompt alone is {prompt_tokens} tokens",
                    code="insufficient_quota",
                )
            self.reserved = (params.n, granted)
            if granted < params.max_tokens:
                self.params = dataclasses.replace(params, max_tokens=granted)
        self._done = False

    def start(self, start: Callable[[SamplingParams], Any]):
        """`start(params)` with the granted params; the reservation is returned if it raises
        (a full queue: 503)."""
        try:
            return start(self.params)
        except BaseException:
            self._done = True
            if self.reserved:
                self.store.release(self.key_id, self.prompt_tokens, self.reserved)
            raise

    def settle(self, g, endpoint: str) -> None:
        if self._done:
            return
        self._done = True
        cached = getattr(g, "prompt_cache_hit_tokens", 0) or 0
        self.store.settle(
            self.key_id,
            self.model,
            endpoint,
            g.prompt_tokens,
            g.completion_tokens,
            g.reasoning_tokens,
            cached,
            self.reserved,
        )


async def _client_gone(request: Request) -> None:
    # after the body is read, the next ASGI message is the client's disconnect
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_or_abort(request: Request, g):
    """`g.run()`, unless the client disconnects first: then the generation is cancelled, which
    aborts its engine request and frees its KV blocks (as leaving a stream does), and a 499
    goes nowhere."""
    run = asyncio.ensure_future(g.run())
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    if run.cancelled():
        raise APIError(499, "the client closed the request", code="client_closed_request")
    return run.result()


async def keepalive(
    source: AsyncIterator, interval: float, request: Request | None = None
) -> AsyncIterator:
    """The items of `source`, and None each time `interval` seconds pass without one (the
    caller sends an SSE `: keep-alive` comment then, as DeepSeek does while a request waits).
    With `request`, a client that disconnects ends the iteration at once (closing `source`
    aborts its engine request), also while the stream has nothing to send."""
    it = source.__aiter__()
    nxt = asyncio.ensure_future(it.__anext__())
    gone = asyncio.ensure_future(_client_gone(request)) if request is not None else None
    try:
        while True:
            if not nxt.done():  # one turn of the loop runs it: an item already queued (a
                await asyncio.sleep(0)  # client behind the engine) then needs no timed wait
            if not nxt.done():
                waiting = {nxt} if gone is None else {nxt, gone}
                done, _ = await asyncio.wait(
                    waiting, timeout=interval, return_when="FIRST_COMPLETED"
                )
                if not done:
                    yield None
                    continue
            if gone is not None and gone.done():
                return
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item
            nxt = asyncio.ensure_future(it.__anext__())
    finally:
        if gone is not None:
            gone.cancel()
        if not nxt.done():
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
