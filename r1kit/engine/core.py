"""The paged engine in a process of its own (the engine core), driven with token ids over a pipe.

    eng = EngineProcess(model, max_waiting=256, kv_memory=0.5)   # spawns; shares the weights
    src = eng.open(prompt_ids, params)                           # a StreamingEngine
    async for delta, finished in src: ...

Why a process: in one interpreter the loop that steps the engine and the server's per-token
work (detokenizing, JSON, SSE framing, HTTP) take turns on the GIL, so the GPU idles while the
event loop frames events (bench/results/serve_load_*.json: the server's share of the bare
engine's throughput). Here the core process only schedules, steps and sends token ids; the
server process detokenizes and frames. vLLM's engine core behind its API server is the same
design (over ZeroMQ; a multiprocessing pipe carries our one client's traffic as well).

Protocol (pickled tuples). To the core: ("add", rid, prompt_ids, params), ("abort", rid),
("close",). From the core: ("ready", info) or ("failed", message) once at start; then
("out", [(rid, samples, finished, num_cached)], stats) after each step that produced tokens,
with samples [(new token ids, new log-probs | None, finish reason)], ("error", rid, message)
for a request the engine refused, ("fail", [rids], message) when a step raised (those
requests are dropped, the core keeps serving) and ("stats", stats) after commands while idle.
The model reaches the child through torch.multiprocessing: CPU tensors in shared memory, CUDA
tensors by IPC handle, so the weights exist once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Sequence

from r1kit.engine.paged import PagedEngine
from r1kit.engine.streaming import Delta, drain
from r1kit.engine.types import RequestOutput, Sample, SamplingParams

START_TIMEOUT_S = 600


class EngineProcess:
    kind = "paged"

    def __init__(self, model, max_waiting: int | None = 256, **engine_kw) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        self._conn, child = ctx.Pipe()
        import torch

        threads = torch.get_num_threads()  # the child starts with the default, not ours
        self.proc = ctx.Process(
            target=core_main,
            args=(child, model, engine_kw, threads),
            name="r1kit-engine-core",
            daemon=True,
        )
        self.proc.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self.proc.kill()
            raise RuntimeError("the engine process did not start")
        try:
            msg = self._conn.recv()
        except EOFError:
            msg = ("failed", f"it exited with code {self.proc.exitcode}")
        if msg[0] != "ready":
            self.proc.join(timeout=5)
            raise RuntimeError(f"the engine process failed to start: {msg[1]}")
        info = msg[1]
        self.max_model_len, self.max_num_seqs = info["max_model_len"], info["max_num_seqs"]
        self.max_waiting = max_waiting
        self._stats = info["stats"]
        self._subs: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue, list[int]]] = {}
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="r1kit-engine-reader", daemon=True)
        self._reader.start()

    # ----------------------------------------------------------------- front end
    def open(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Delta]:
        if self._closed or not self.proc.is_alive():
            raise RuntimeError("the engine process is not running")
        if self.max_waiting is not None:
            # requests beyond max_num_seqs wait (fewer run when KV blocks are short: the
            # core's last count says so)
            queued = max(self._stats["waiting"], len(self._subs) - self.max_num_seqs)
            if queued >= self.max_waiting:
                raise OverflowError("the engine's queue is full")
        rid = f"r{next(self._ids)}"
        q: asyncio.Queue = asyncio.Queue()
        prompt = [int(t) for t in prompt_ids]
        self._subs[rid] = (asyncio.get_running_loop(), q, prompt)
        self._send(("add", rid, prompt, params))
        return drain(q, lambda: self._abort(rid))

    def _abort(self, rid: str) -> None:
        if self._subs.pop(rid, None) is not None and not self._closed:
            self._send(("abort", rid))

    def _send(self, msg: tuple) -> None:
        with self._send_lock:
            self._conn.send(msg)

    def _read(self) -> None:
        """Reader thread: one message per engine step, handed to each request's event loop in
        one call per loop."""
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._fail_all(RuntimeError("the engine process exited"))
                return
            kind = msg[0]
            if kind == "out":
                self._stats = msg[2]
                by_loop: dict = {}
                for item in msg[1]:
                    sub = self._subs.get(item[0])
                    if sub is None:  # aborted meanwhile
                        continue
                    if item[2]:
                        self._subs.pop(item[0], None)
                    by_loop.setdefault(sub[0], []).append((sub, item))
                for loop, items in by_loop.items():
                    _call(loop, _deliver, items)
            elif kind == "stats":
                self._stats = msg[1]
            elif kind == "error":
                sub = self._subs.pop(msg[1], None)
                if sub is not None:
                    _call(sub[0], sub[1].put_nowait, (ValueError(msg[2]), True))
            elif kind == "fail":
                err = RuntimeError(msg[2])
                for rid in msg[1]:
                    sub = self._subs.pop(rid, None)
                    if sub is not None:
                        _call(sub[0], sub[1].put_nowait, (err, True))

    def _fail_all(self, err: Exception) -> None:
        subs, self._subs = self._subs, {}
        for loop, q, _ in subs.values():
            _call(loop, q.put_nowait, (err, True))

    def stats(self) -> dict:
        return dict(self._stats)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._send(("close",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self._conn.close()


def _call(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that loop is closed: its requests are gone
        pass


def _deliver(items: list) -> None:
    for (_, q, prompt), (_, samples, finished, cached) in items:
        out = RequestOutput(prompt, [Sample(t, lp, r, len(prompt)) for t, lp, r in samples], cached)
        q.put_nowait((out, finished))


# --------------------------------------------------------------------------- the core process


def core_main(conn, model, engine_kw: dict, threads: int) -> None:
    """The engine core: receive commands, step the paged engine while it has work, send each
    step's new tokens. Runs until ("close",) or until the server's end of the pipe closes."""
    try:
        import torch

        torch.set_num_threads(threads)

        engine = PagedEngine(model, **engine_kw)
        if engine.device.type == "cuda":  # graphs and kernels now, not on the first requests
            engine.warm_up()
    except BaseException as e:
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    core = _Core(engine, conn)
    conn.send(
        (
            "ready",
            {
                "max_model_len": engine.max_model_len,
                "max_num_seqs": engine.max_num_seqs,
                "stats": core.stats(),
            },
        )
    )
    try:
        core.run()
    except (EOFError, OSError, KeyboardInterrupt):  # the server went away
        pass


class _Core:
    def __init__(self, engine, conn) -> None:
        self.engine, self.conn = engine, conn
        self.sent: dict[str, list[int]] = {}  # request id -> tokens sent per sample

    def stats(self) -> dict:
        e = self.engine
        return {
            "engine": "paged",
            "running": len(e.scheduler.running),
            "waiting": len(e.scheduler.waiting),
            "requests": len(e.requests),
            "free_blocks": e.alloc.num_free,
            "total_blocks": e.alloc.num_blocks,
            "cached_blocks": e.alloc.num_cached,
        }

    def run(self) -> None:
        conn, engine = self.conn, self.engine
        changed = False  # since the server last had the stats
        while True:
            if not engine.has_work:
                if changed:
                    conn.send(("stats", self.stats()))
                    changed = False
                conn.poll(None)  # idle: sleep until the server sends something
            while conn.poll(0):
                if not self.handle(conn.recv()):
                    return
                changed = True
            if not engine.has_work:
                continue
            changed = True
            try:
                touched = engine.step()
            except Exception as e:  # fail what is in flight, keep serving
                rids = list(engine.requests)
                for rid in rids:
                    engine.abort(rid)
                    self.sent.pop(rid, None)
                conn.send(("fail", rids, f"the engine failed: {type(e).__name__}: {e}"))
                continue
            if touched:
                conn.send(("out", [self.delta(r) for r in touched], self.stats()))

    def handle(self, msg: tuple) -> bool:
        kind = msg[0]
        if kind == "add":
            _, rid, prompt, params = msg
            try:
                self.engine.add_request(prompt, params, rid)
            except (ValueError, RuntimeError) as e:
                self.conn.send(("error", rid, str(e)))
                return True
            self.sent[rid] = [0] * params.n
        elif kind == "abort":
            self.engine.abort(msg[1])
            self.sent.pop(msg[1], None)
        elif kind == "close":
            return False
        return True

    def delta(self, req) -> tuple:
        sent = self.sent[req.request_id]
        samples = []
        for j, s in enumerate(req.seqs):
            k = sent[j]
            lps = s.logprobs[k:] if s.logprobs is not None else None
            samples.append((s.tokens[s.prompt_len + k :], lps, s.finish_reason or "length"))
            sent[j] = s.num_output
        finished = req.finished
        if finished:
            del self.sent[req.request_id]
        return (req.request_id, samples, finished, req.num_cached_tokens or 0)
