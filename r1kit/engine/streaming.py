"""The one async interface the server has over every engine: `StreamingEngine`.

    src = engine.open(prompt_ids, SamplingParams(max_tokens=64))   # OverflowError when full
    async for delta, finished in src:    # delta.samples[j].token_ids: new since the last one
        ...
    await src.aclose()                    # leaving early aborts the request (frees its blocks)

Implementations: `EngineProcess` (core.py: the paged engine in a process of its own, the
server's default), `AsyncEngine` (async_engine.py: the paged engine on a thread of this
process), `ThreadedEngine` (below: any engine that generates one request at a time from a
blocking call, the `transformers` fallback and llama.cpp). Deltas that queue up while the
consumer is busy come out merged (`next_delta`): one detokenize and one SSE event per batch
of tokens for a client that falls behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from r1kit.engine.types import RequestOutput, SamplingParams

Delta = tuple[RequestOutput, bool]  # (tokens new since the previous delta, request finished)


class StreamingEngine(Protocol):
    kind: str  # "paged" | "hf" | "llama.cpp": what /health reports
    max_model_len: int
    max_num_seqs: int  # the largest n a request may ask for

    def open(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """Queue a request now (raises OverflowError when the queue is full, ValueError for a
        prompt the engine refuses); iterate for its deltas."""
        ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...


async def next_delta(q: asyncio.Queue) -> tuple[RequestOutput | Exception, bool]:
    """The next (delta, finished) of a request's queue. Under load the consumer falls behind
    the engine: every delta already queued is taken and merged into one (fewer detokenize
    calls and SSE events per token); an error ends the merge."""
    item, done = await q.get()
    while not done and not isinstance(item, Exception) and not q.empty():
        nxt, done = q.get_nowait()
        item = nxt if isinstance(nxt, Exception) else merge(item, nxt)
    return item, done


def merge(a: RequestOutput, b: RequestOutput) -> RequestOutput:
    """Two consecutive deltas of one request as one (b's tokens after a's; b's finish reason)."""
    for s, n in zip(a.samples, b.samples):
        s.token_ids += n.token_ids
        if s.logprobs is not None and n.logprobs is not None:
            s.logprobs += n.logprobs
        s.finish_reason = n.finish_reason
    a.num_cached_tokens = b.num_cached_tokens or a.num_cached_tokens
    return a


class Stream:
    """A request's deltas until it finishes: `take()` gives the next (delta, finished); an
    error, as the delta or raised, ends the stream. Leaving before the end calls `on_leave` (an
    abort) once: on `aclose()`, on cancellation, and when the stream is collected unread.

    A class, not an async generator: a generator closed (or dropped) before its first step never
    runs its `finally`, so a request whose consumer went away before reading would run to the
    end for nobody, holding its KV blocks."""

    def __init__(
        self,
        take: Callable[[], Awaitable[tuple[RequestOutput | Exception, bool]]],
        on_leave: Callable[[], None],
    ) -> None:
        self._take, self._on_leave = take, on_leave
        self._done = False  # finished, failed, or left: nothing more to abort

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        try:
            item, done = await self._take()
        except Exception:
            self._done = True
            raise
        except BaseException:  # cancelled while waiting: the consumer left
            self._leave()
            raise
        if isinstance(item, Exception):
            self._done = True
            raise item
        self._done = done
        return item, done

    def _leave(self) -> None:
        if not self._done:
            self._done = True
            self._on_leave()

    async def aclose(self) -> None:
        self._leave()

    def __del__(self) -> None:
        # collected unread (its consumer never iterated it). The collector may run on a thread
        # that holds the engine's send lock (mid-send): abort from a thread of its own, which
        # waits for that lock instead of deadlocking on it.
        if not self._done:
            self._done = True
            try:
                threading.Thread(target=self._on_leave, name="r1kit-abort", daemon=True).start()
            except RuntimeError:  # the interpreter is shutting down: the engine goes with it
                pass


Run = Callable[[list[int], SamplingParams, threading.Event, Callable[[Delta | tuple], None]], None]


class ThreadedEngine:
    """An engine that serves one request at a time from a blocking call, on worker threads.

    `run(prompt_ids, params, stop, put)` generates the request, calling `put((delta,
    finished))` as tokens come (once at the end is fine) and returning early once `stop` is
    set; it runs under a lock, so requests take turns. `max_waiting` requests may wait."""

    def __init__(
        self,
        run: Run,
        kind: str,
        max_model_len: int,
        max_num_seqs: int = 64,
        max_waiting: int | None = 64,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.kind, self.max_model_len, self.max_num_seqs = kind, max_model_len, max_num_seqs
        self.max_waiting = max_waiting
        self._run, self._on_close = run, on_close
        self._lock = threading.Lock()
        self._busy = 0

    def open(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Delta]:
        if self.max_waiting is not None and self._busy > self.max_waiting:
            raise OverflowError("the engine's queue is full")
        return self._stream(list(prompt_ids), params)

    async def _stream(self, prompt_ids: list[int], params: SamplingParams):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item) -> None:
            loop.call_soon_threadsafe(q.put_nowait, item)

        def work() -> None:
            try:
                with self._lock:
                    if not stop.is_set():
                        self._run(prompt_ids, params, stop, put)
            except Exception as e:  # the request fails; the server keeps serving
                put((e, True))

        self._busy += 1
        threading.Thread(target=work, daemon=True, name=f"r1kit-{self.kind}").start()
        src = Stream(lambda: next_delta(q), stop.set)
        try:
            async for d in src:
                yield d
        finally:
            stop.set()  # the worker ends at its next token
            self._busy -= 1
            await src.aclose()

    def stats(self) -> dict:
        return {"engine": self.kind, "busy": self._busy}

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
