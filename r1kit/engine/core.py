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
("out", [(rid, samples, finished, num_cached)], stats) after each step that produced tokens
(steps still unsent when the next one ends are joined: one item per request), with samples
[(new token ids, new log-probs | None, finish reason)], ("error", rid, message)
for a request the engine refused, ("fail", [rids], message) when a step raised (those
requests are dropped, the core keeps serving) and ("stats", stats) after commands while idle.
While sequences decode, arriving "add"s are held briefly (BURST_HOLD_S) and prefilled together.
The model reaches the child through torch.multiprocessing: CPU tensors in shared memory, CUDA
tensors by IPC handle, so the weights exist once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Sequence

from r1kit.engine.paged import PagedEngine
from r1kit.engine.streaming import Delta, Stream
from r1kit.engine.types import RequestOutput, Sample, SamplingParams

START_TIMEOUT_S = 600
# While sequences decode, requests that arrive are held up to this long (or until
# BURST_HOLD_MAX of them wait) and then prefilled together: a burst of requests reaching the
# core a few at a time (the server admits them one by one) would otherwise cost one prefill
# step, and one pause of every running stream, per handful. An idle engine takes each at once.
BURST_HOLD_S = 0.01
BURST_HOLD_MAX = 64


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
            args=(child, model, engine_kw, threads, BURST_HOLD_S),
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
        self._subs: dict[str, _Sub] = {}
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
        prompt = [int(t) for t in prompt_ids]
        sub = self._subs[rid] = _Sub(asyncio.get_running_loop(), prompt)
        self._send(("add", rid, prompt, params))
        return Stream(sub.take, lambda: self._abort(rid))

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
                    by_loop.setdefault(sub.loop, []).append((sub, item))
                for loop, items in by_loop.items():
                    _call(loop, _deliver, items)
            elif kind == "stats":
                self._stats = msg[1]
            elif kind == "error":
                sub = self._subs.pop(msg[1], None)
                if sub is not None:
                    _call(sub.loop, sub.put, ValueError(msg[2]))
            elif kind == "fail":
                err = RuntimeError(msg[2])
                for rid in msg[1]:
                    sub = self._subs.pop(rid, None)
                    if sub is not None:
                        _call(sub.loop, sub.put, err)

    def _fail_all(self, err: Exception) -> None:
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            _call(sub.loop, sub.put, err)

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
    """On a request's event loop: one engine message's items, each kept as it came (a list
    append); the request's consumer builds one delta from all it finds when it runs next."""
    for sub, item in items:
        sub.put(item)


class _Sub:
    """A request's raw step outputs (rid, samples, finished, cached) or an error, not yet taken
    by its consumer. Per step and request this is an append, not a delta object and a queue
    put: at 128 streams the server's event loop did that 32,768 times per 256-token level."""

    __slots__ = ("loop", "prompt", "items", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt: list[int]) -> None:
        self.loop, self.prompt = loop, prompt
        self.items: list = []
        self.waiter: asyncio.Future | None = None

    def put(self, item) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def take(self) -> tuple[RequestOutput, bool]:
        """Everything queued since the last take, as one delta (tokens joined, the last finish
        reason); an error raises (it ends the stream)."""
        while not self.items:
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        items, self.items = self.items, []
        out, finished = None, False
        for item in items:
            if isinstance(item, Exception):
                raise item
            _, samples, finished, cached = item
            if out is None:
                n = len(self.prompt)
                out = RequestOutput(
                    self.prompt, [Sample(list(t), lp, r, n) for t, lp, r in samples], cached
                )
                continue
            for s, (t, lp, r) in zip(out.samples, samples):
                s.token_ids += t
                if s.logprobs is not None and lp is not None:
                    s.logprobs += lp
                s.finish_reason = r
            out.num_cached_tokens = cached or out.num_cached_tokens
        return out, finished


# --------------------------------------------------------------------------- the core process


def core_main(conn, model, engine_kw: dict, threads: int, hold_s: float = BURST_HOLD_S) -> None:
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
    core = _Core(engine, conn, hold_s)
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
    def __init__(self, engine, conn, hold_s: float = BURST_HOLD_S) -> None:
        self.engine, self.conn, self.hold_s = engine, conn, hold_s
        self.out = _Outbox(conn)
        self.sent: dict[str, list[int]] = {}  # request id -> tokens sent per sample
        self.held: dict[str, tuple] = {}  # request id -> add command not yet given to the engine
        self.held_since = 0.0  # when the oldest of them came

    def stats(self) -> dict:
        e = self.engine
        return {
            "engine": "paged",
            "running": len(e.scheduler.running),
            "waiting": len(e.scheduler.waiting) + len(self.held),
            "requests": len(e.requests),
            "free_blocks": e.alloc.num_free,
            "total_blocks": e.alloc.num_blocks,
            "cached_blocks": e.alloc.num_cached,
        }

    def run(self) -> None:
        conn, engine, out = self.conn, self.engine, self.out
        changed = False  # since the server last had the stats
        while True:
            if not engine.has_work and not self.held:
                if changed:
                    out.send(("stats", self.stats()))
                    changed = False
                conn.poll(None)  # idle: sleep until the server sends something
            while conn.poll(0):
                if not self.handle(conn.recv()):
                    return
                changed = True
            if self.held and (
                not engine.scheduler.running
                or len(self.held) >= BURST_HOLD_MAX
                or time.perf_counter() - self.held_since >= self.hold_s
            ):
                held, self.held = self.held, {}
                for msg in held.values():
                    self.add(*msg[1:])
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
                out.send(("fail", rids, f"the engine failed: {type(e).__name__}: {e}"))
                continue
            if touched:
                out.send(("out", [self.delta(r) for r in touched], self.stats()))

    def handle(self, msg: tuple) -> bool:
        kind = msg[0]
        if kind == "add":
            if self.hold_s > 0 and self.engine.scheduler.running:
                if not self.held:
                    self.held_since = time.perf_counter()
                self.held[msg[1]] = msg
            else:
                self.add(*msg[1:])
        elif kind == "abort":
            if self.held.pop(msg[1], None) is None:
                self.engine.abort(msg[1])
                self.sent.pop(msg[1], None)
        elif kind == "close":
            return False
        return True

    def add(self, rid: str, prompt: list[int], params) -> None:
        try:
            self.engine.add_request(prompt, params, rid)
        except (ValueError, RuntimeError) as e:
            self.out.send(("error", rid, str(e)))
            return
        self.sent[rid] = [0] * params.n

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


class _Outbox:
    """The core's messages to the server, sent by a thread of their own, so the step loop never
    waits on the pipe. A server process busy framing events reads the pipe late (its reader
    thread waits for the interpreter); a step loop that sent itself then blocked once the pipe
    was full. Step outputs still unsent when the next step ends go out as one message, each
    request's tokens joined (one item per request), so a late reader gets fewer, larger messages.
    """

    def __init__(self, conn) -> None:
        self.conn = conn
        self.cv = threading.Condition()
        self.pending: list[list] = []  # [kind, payload...]; an "out" is ["out", {rid: item}, stats]
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name="r1kit-engine-sender", daemon=True).start()

    def send(self, msg: tuple) -> None:
        """Queue `msg`; raises the error that ended the sender (the server went away)."""
        with self.cv:
            if self.error is not None:
                raise self.error
            last = self.pending[-1] if self.pending else None
            if msg[0] == "out" and last is not None and last[0] == "out":
                for item in msg[1]:
                    old = last[1].get(item[0])
                    last[1][item[0]] = item if old is None else _join(old, item)
                last[2] = msg[2]
            elif msg[0] == "out":
                self.pending.append(["out", {item[0]: item for item in msg[1]}, msg[2]])
            else:
                self.pending.append(list(msg))
            self.cv.notify()

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.pending:
                    self.cv.wait()
                batch, self.pending = self.pending, []
            try:
                for m in batch:
                    if m[0] == "out":
                        self.conn.send(("out", list(m[1].values()), m[2]))
                    else:
                        self.conn.send(tuple(m))
            except (OSError, ValueError) as e:  # the server's end closed
                with self.cv:
                    self.error = e if isinstance(e, OSError) else OSError(str(e))
                return


def _join(a: tuple, b: tuple) -> tuple:
    """Two consecutive step outputs of one request as one: (rid, samples, finished, cached)."""
    samples = [
        (ta + tb, la + lb if la is not None and lb is not None else None, rb)
        for (ta, la, _), (tb, lb, rb) in zip(a[1], b[1])
    ]
    return (a[0], samples, b[2], b[3])
