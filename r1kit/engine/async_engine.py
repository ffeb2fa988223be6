"""Async streaming over the paged engine on a thread of this process (a `StreamingEngine`).

One background thread owns the engine and steps it while there is work; asyncio callers add
requests and receive deltas through per-request queues. Leaving the `stream()` iterator early
(a client disconnect cancels the task) aborts the request, which frees its KV blocks. The
server runs the engine in a process of its own instead (core.py): here the stepping thread
shares the GIL with the caller's event loop.

    aeng = AsyncEngine(PagedEngine(model))
    async for delta in aeng.stream(prompt_ids, SamplingParams(max_tokens=64)):
        ...  # delta.samples[j].token_ids: tokens new since the previous delta
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

from r1kit.engine.paged import PagedEngine
from r1kit.engine.sequence import Request
from r1kit.engine.streaming import Delta, Stream, merge, next_delta
from r1kit.engine.types import RequestOutput, Sample, SamplingParams

__all__ = ["AsyncEngine", "next_delta"]


class AsyncEngine:
    kind = "paged"

    def __init__(self, engine: PagedEngine, max_waiting: int | None = None) -> None:
        self.engine = engine
        self.max_model_len, self.max_num_seqs = engine.max_model_len, engine.max_num_seqs
        self.max_waiting = max_waiting  # None = unbounded; else add() raises when full
        self._lock = threading.Lock()
        # A Lock is not fair: the stepping thread would re-take it at once after each step and
        # starve add()/abort() (and so the event loop) until the batch drained. Callers hold the
        # turnstile while they wait for the lock; the stepping thread passes it before each step.
        self._turn = threading.Lock()
        self._work = threading.Event()
        self._subs: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue, list[int]]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="r1kit-engine", daemon=True)
        self._thread.start()

    @property
    def num_waiting(self) -> int:
        return len(self.engine.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.engine.scheduler.running)

    def _loop(self) -> None:
        while not self._closed:
            self._work.wait()
            with self._turn:
                pass
            with self._lock:
                if not self.engine.has_work:
                    self._work.clear()
                    continue
                try:
                    touched = self.engine.step()
                except Exception as e:  # fail every request in flight, keep serving
                    self._fail_all(e)
                    continue
                for req in touched:
                    self._publish(req)

    def _publish(self, req: Request) -> None:
        sub = self._subs.get(req.request_id)
        if sub is None:
            return
        loop, q, sent = sub
        samples = []
        for j, s in enumerate(req.seqs):
            new = s.output[sent[j] :]
            lps = s.logprobs[sent[j] :] if s.logprobs is not None else None
            sent[j] = s.num_output
            samples.append(Sample(new, lps, s.finish_reason or "length", req.prompt_len))
        delta = RequestOutput(req.prompt_ids, samples, req.num_cached_tokens or 0)
        if req.finished:
            self._subs.pop(req.request_id, None)
        loop.call_soon_threadsafe(q.put_nowait, (delta, req.finished))

    def _fail_all(self, err: Exception) -> None:
        for rid, (loop, q, _) in list(self._subs.items()):
            self.engine.abort(rid)
            loop.call_soon_threadsafe(q.put_nowait, (err, True))
        self._subs.clear()

    def add(
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> tuple[str, asyncio.Queue]:
        """Queue a request; raises OverflowError when max_waiting requests already wait."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        with self._turn, self._lock:
            if self.max_waiting is not None and self.num_waiting >= self.max_waiting:
                raise OverflowError("the engine's queue is full")
            rid = self.engine.add_request(prompt_ids, params, request_id)
            self._subs[rid] = (loop, q, [0] * params.n)
        self._work.set()
        return rid, q

    def abort(self, request_id: str) -> None:
        with self._turn, self._lock:
            self._subs.pop(request_id, None)
            self.engine.abort(request_id)

    def open(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """StreamingEngine: queue now, iterate for (delta, finished)."""
        rid, q = self.add(prompt_ids, params)
        return Stream(lambda: next_delta(q), lambda: self.abort(rid))

    def stats(self) -> dict:
        e = self.engine
        return {
            "engine": "paged",
            "running": self.num_running,
            "waiting": self.num_waiting,
            "requests": len(e.requests),
            "free_blocks": e.alloc.num_free,
            "total_blocks": e.alloc.num_blocks,
            "cached_blocks": e.alloc.num_cached,
        }

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        rid, q = self.add(prompt_ids, params, request_id)
        src = Stream(lambda: next_delta(q), lambda: self.abort(rid))
        try:
            async for item, _ in src:
                yield item
        finally:
            await src.aclose()  # aborts the request when left early

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> RequestOutput:
        """The whole output of one request (deltas joined)."""
        out: RequestOutput | None = None
        async for d in self.stream(prompt_ids, params, request_id):
            out = d if out is None else merge(out, d)
        assert out is not None
        return out

    def close(self) -> None:
        self._closed = True
        self._work.set()
        self._thread.join(timeout=5)
