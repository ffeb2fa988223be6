"""The paged engine in a process of its own (the engine core), driven with token ids over pipes.

    eng = EngineProcess(model, max_waiting=256, kv_memory=0.5)   # spawns; shares the weights
    src = eng.open(prompt_ids, params)                           # a StreamingEngine
    async for delta, finished in src: ...

    core = EngineCore(model, clients=4, kv_memory=0.5)           # one core, four API workers:
    EngineClient(core.conns[i], core.info, 256, core.inflight)   # each in a worker process

Why a process: in one interpreter the loop that steps the engine and the server's per-token
work (detokenizing, JSON, SSE framing, HTTP) take turns on the GIL, so the GPU idles while the
event loop frames events (bench/results/serve_load_*.json: the server's share of the bare
engine's throughput). Here the core process only schedules, steps and sends token ids; the
server's API processes detokenize and frame. vLLM's engine core behind its API servers is the
same design (over ZeroMQ). The core takes one multiprocessing pipe per API process
(`clients`): no dependency, each client's messages arrive in order on its own channel, and a
client that dies shows as the end of its pipe, which tells the core exactly which requests to
abort; the core waits on all of them at once when idle and polls each between steps.

Protocol (pickled tuples). To the core: ("add", rid, prompt_ids, params), ("abort", rid),
("close",) (this client leaves; the core exits when every client has, and its owner closed
the control pipe). On the control pipe, from the process that started the core:
("join", client id, pipe end) (a new client: an API process restarted in place of a dead
one, whose pipe's end told the core to abort its requests). From the core:
("ready", info) or ("failed", message) once at start, on the first pipe; then
("out", [(rid, samples, finished, num_cached)], stats) after each step that produced tokens
for that client's requests (steps still unsent when the next one ends are joined: one item per
request), with samples [(new token ids, new log-probs | None, finish reason)],
("error", rid, message) for a request the engine refused, ("fail", [rids], message) when a
step raised (those requests are dropped, the core keeps serving), ("stats", stats), to every
client, after commands while idle, and ("bye", message) before the core exits on SIGINT
(Ctrl-C reaches the whole process group: the server is stopping; the requests in flight end
with `EngineStopped(message)`, not as a crash). Request ids are the clients' own and must be
unique across clients (EngineClient prefixes its own). While sequences decode, arriving
"add"s are held briefly (BURST_HOLD_S) and prefilled together. The model reaches the child through
torch.multiprocessing: CPU tensors in shared memory, CUDA tensors by IPC handle, so the
weights exist once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import wait as wait_any

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
STATS_EVERY_S = 0.05  # while stepping, how often clients without tokens in a step get the stats
SHUTDOWN = "the server is shutting down"


class EngineStopped(RuntimeError):
    """The engine core was stopped on purpose (Ctrl-C, the server stopping): requests in flight
    end with this, which the server reports as such (503), not as an engine failure."""


class EngineCore:
    """The engine core process, with `clients` pipes to it (`conns`, one per API process) and
    the requests in flight of each (`inflight[slot]`, in shared memory, one writer each), so
    the waiting-queue limit holds across API processes. `info`: max_model_len, max_num_seqs
    and the first stats. `join` adds a client (an API process restarted), `forget` zeroes a
    dead one's count."""

    def __init__(self, model, clients: int = 1, **engine_kw) -> None:
        import torch
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        pairs = [ctx.Pipe() for _ in range(clients)]
        self.conns = [a for a, _ in pairs]
        self._ctrl, ctrl = ctx.Pipe()  # new clients, from this process
        # one client counts its own requests; several share these counts (a named semaphore
        # and shared ints: only made when needed). A plain lock, not the default RLock: one
        # that a killed process held can be released by another (`forget`)
        self.inflight = ctx.Array("l", clients, lock=ctx.Lock()) if clients > 1 else None
        threads = torch.get_num_threads()  # the child starts with the default, not ours
        self.proc = ctx.Process(
            target=core_main,
            args=([b for _, b in pairs], model, engine_kw, threads, BURST_HOLD_S, ctrl),
            name="r1kit-engine-core",
            daemon=True,
        )
        self.proc.start()
        for _, b in pairs:
            b.close()
        ctrl.close()
        first = self.conns[0]
        if not first.poll(START_TIMEOUT_S):
            self.proc.kill()
            raise RuntimeError("the engine process did not start")
        try:
            msg = first.recv()
        except EOFError:
            msg = ("failed", f"it exited with code {self.proc.exitcode}")
        if msg[0] != "ready":
            self.proc.join(timeout=5)
            raise RuntimeError(f"the engine process failed to start: {msg[1]}")
        self.info: dict = msg[1]

    def release(self) -> None:
        """Close this process's ends of the pipes (after handing them to API processes)."""
        for c in self.conns:
            c.close()

    def join(self, client: int):
        """A new client's end of a new pipe to the core (`client`: an id no client had).
        The core gets its own end over the control pipe."""
        import torch.multiprocessing as mp

        mine, theirs = mp.get_context("spawn").Pipe()
        # pickled by multiprocessing's reducer: the core fetches the descriptor from this
        # process's resource sharer, so it may be closed here at once
        self._ctrl.send(("join", client, theirs))
        theirs.close()
        return mine

    def forget(self, slot: int) -> int:
        """Zero the in-flight count of a dead client (its requests end with it) and return
        what it was. A client killed inside its count's lock left it held: past a second (the
        lock guards a few additions), this process takes it over."""
        assert self.inflight is not None
        lock = self.inflight.get_lock()
        lock.acquire(timeout=1.0)  # held by the dead one, or now by us: ours either way
        try:
            n = self.inflight.get_obj()[slot]
            self.inflight.get_obj()[slot] = 0
        finally:
            lock.release()
        return n

    def close(self, timeout: float = 10) -> None:
        """Wait for the core to exit (it does once every client has closed, with the control
        pipe), then kill it."""
        self._ctrl.close()
        self.proc.join(timeout=timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.inflight = None  # its semaphore is unlinked now, not reported leaked at exit


class EngineClient:
    """The front end of the engine core over one pipe (`StreamingEngine`): a reader thread
    hands each step's tokens to the requests' event loops. `inflight` is the core's shared
    count of requests in flight (EngineCore.inflight), `prefix` makes this client's request
    ids unique among the core's clients."""

    kind = "paged"

    def __init__(
        self,
        conn,
        info: dict,
        max_waiting: int | None = 256,
        inflight=None,
        prefix: str = "",
        slot: int = 0,
    ) -> None:
        self._conn = conn
        self.max_model_len, self.max_num_seqs = info["max_model_len"], info["max_num_seqs"]
        self.max_waiting = max_waiting
        self._stats = info["stats"]
        self._inflight = inflight  # EngineCore.inflight: this client counts in inflight[slot]
        self._slot = slot
        self._subs: dict[str, _Sub] = {}
        self._ids = itertools.count()
        self._prefix = prefix
        self._send_lock = threading.Lock()
        self._closed = False
        self._bye: str | None = None  # why the core said it stops ("bye"), once it has
        self._reader = threading.Thread(target=self._read, name="r1kit-engine-reader", daemon=True)
        self._reader.start()

    def _alive(self) -> bool:
        return not self._closed

    # ----------------------------------------------------------------- front end
    def open(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Delta]:
        if self._bye is not None:
            raise EngineStopped(self._bye)
        if not self._alive():
            raise RuntimeError("the engine process is not running")
        self._admit()
        rid = f"{self._prefix}r{next(self._ids)}"
        prompt = [int(t) for t in prompt_ids]
        sub = self._subs[rid] = _Sub(asyncio.get_running_loop(), prompt)
        self._send(("add", rid, prompt, params))
        return Stream(sub.take, lambda: self._abort(rid))

    def _admit(self) -> None:
        """Count a new request in, or raise OverflowError when the engine's queue is full:
        requests beyond max_num_seqs wait (fewer run when KV blocks are short: the core's
        last count says so). Over every client of the core when they share `inflight`."""
        c = self._inflight
        if c is None:
            if self.max_waiting is not None:
                queued = max(self._stats["waiting"], len(self._subs) - self.max_num_seqs)
                if queued >= self.max_waiting:
                    raise OverflowError("the engine's queue is full")
            return
        with c.get_lock():  # the check and the count in one step, whichever process asks
            counts = c.get_obj()
            if self.max_waiting is not None:
                queued = max(self._stats["waiting"], sum(counts) - self.max_num_seqs)
                if queued >= self.max_waiting:
                    raise OverflowError("the engine's queue is full")
            counts[self._slot] += 1

    def _drop(self, rid: str) -> _Sub | None:
        """Forget a request (finished, failed or aborted) and count it out, once."""
        sub = self._subs.pop(rid, None)
        if sub is not None and self._inflight is not None:
            with self._inflight.get_lock():
                self._inflight.get_obj()[self._slot] -= 1
        return sub

    def _abort(self, rid: str) -> None:
        if self._drop(rid) is not None and not self._closed:
            try:
                self._send(("abort", rid))
            except (BrokenPipeError, OSError):  # the core is gone: nothing runs
                pass

    def _send(self, msg: tuple) -> None:
        with self._send_lock:
            self._conn.send(msg)

    def _read(self) -> None:
        """Reader thread: one message per engine step, handed to each request's event loop in
        one call per loop."""
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError, TypeError):  # TypeError: closed here while reading
                bye = self._bye
                self._fail_all(
                    EngineStopped(bye) if bye else RuntimeError("the engine process exited")
                )
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
                        self._drop(item[0])
                    by_loop.setdefault(sub.loop, []).append((sub, item))
                for loop, items in by_loop.items():
                    _call(loop, _deliver, items)
            elif kind == "stats":
                self._stats = msg[1]
            elif kind == "error":
                sub = self._drop(msg[1])
                if sub is not None:
                    _call(sub.loop, sub.put, ValueError(msg[2]))
            elif kind == "fail":
                err = RuntimeError(msg[2])
                for rid in msg[1]:
                    sub = self._drop(rid)
                    if sub is not None:
                        _call(sub.loop, sub.put, err)
            elif kind == "bye":
                self._bye = msg[1]
                self._fail_all(EngineStopped(msg[1]))

    def _fail_all(self, err: Exception) -> None:
        for rid in list(self._subs):
            sub = self._drop(rid)
            if sub is not None:
                _call(sub.loop, sub.put, err)

    def stats(self) -> dict:
        return dict(self._stats)

    def close(self) -> None:
        """Leave the core (it exits once every client has left)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._send(("close",))
        except (BrokenPipeError, OSError):
            pass
        # its requests end now (the core aborts them), and leave the shared count at once
        self._fail_all(RuntimeError("the engine client closed"))
        self._after_close()
        self._conn.close()

    def _after_close(self) -> None:
        pass


class EngineProcess(EngineClient):
    """An engine core with this process as its one client: `r1kit serve` with one API process."""

    def __init__(self, model, max_waiting: int | None = 256, **engine_kw) -> None:
        self.core = EngineCore(model, 1, **engine_kw)
        self.proc = self.core.proc
        super().__init__(self.core.conns[0], self.core.info, max_waiting)

    def _alive(self) -> bool:
        return not self._closed and self.proc.is_alive()

    def _after_close(self) -> None:
        self.core.close()


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


def core_main(
    conns: list, model, engine_kw: dict, threads: int, hold_s: float = BURST_HOLD_S, ctrl=None
) -> None:
    """The engine core: receive commands from every client's pipe, step the paged engine while
    it has work, send each step's new tokens to the clients whose requests they are. Runs until
    every client has sent ("close",) or closed its end of the pipe, and `ctrl` (new clients)
    has closed."""
    try:
        import torch

        torch.set_num_threads(threads)

        engine = PagedEngine(model, **engine_kw)
        if engine.device.type == "cuda":  # graphs and kernels now, not on the first requests
            engine.warm_up()
    except BaseException as e:
        conns[0].send(("failed", f"{type(e).__name__}: {e}"))
        return
    core = _Core(engine, conns, hold_s, ctrl)
    conns[0].send(
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
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the server stops too
        core.bye(SHUTDOWN)


class _Core:
    def __init__(self, engine, conns: list, hold_s: float = BURST_HOLD_S, ctrl=None) -> None:
        self.engine, self.hold_s = engine, hold_s
        # client id -> (its pipe, its outbox); a client that leaves is removed
        self.clients = {i: (c, _Outbox(c)) for i, c in enumerate(conns)}
        self.ctrl = ctrl  # ("join", id, pipe) from the process that started the core
        self.owner: dict[str, int] = {}  # request id -> the client that added it
        self.sent: dict[str, list[int]] = {}  # request id -> tokens sent per sample
        self.held: dict[str, tuple] = {}  # request id -> add command not yet given to the engine
        self.held_since = 0.0  # when the oldest of them came
        self.stats_sent = 0.0  # when clients without tokens in a step last had the stats

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
        engine = self.engine
        changed = False  # since the clients last had the stats
        while self.clients or self.ctrl is not None:
            if not engine.has_work and not self.held:
                if changed:
                    stats = self.stats()
                    for i in list(self.clients):
                        self.post(i, ("stats", stats))
                    changed = False
                # idle: sleep until a client sends something (or leaves), or one joins
                ctrl = [self.ctrl] if self.ctrl is not None else []
                wait_any([c for c, _ in self.clients.values()] + ctrl)
            changed |= self.receive_ctrl()
            changed |= self.receive()
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
                by: dict[int, list[str]] = {}
                for rid in rids:
                    i = self.owner.pop(rid, None)
                    if i is not None:
                        by.setdefault(i, []).append(rid)
                for i, ids in by.items():
                    self.post(i, ("fail", ids, f"the engine failed: {type(e).__name__}: {e}"))
                continue
            if touched:
                self.send_out(touched)

    def bye(self, message: str, timeout: float = 2.0) -> None:
        """Tell every client the core stops (their requests in flight end with `message`) and
        wait, up to `timeout`, for the senders to deliver it."""
        for i in list(self.clients):
            self.post(i, ("bye", message))
        end = time.monotonic() + timeout
        for _, box in list(self.clients.values()):
            box.flush(max(0.0, end - time.monotonic()))

    def receive_ctrl(self) -> bool:
        """New clients from the control pipe; True when one joined (it gets the stats)."""
        if self.ctrl is None:
            return False
        got = False
        try:
            while self.ctrl.poll(0):
                msg = self.ctrl.recv()
                if msg[0] == "join":
                    self.clients[msg[1]] = (msg[2], _Outbox(msg[2]))
                    got = True
        except (EOFError, OSError):  # the server is stopping: no client joins any more
            self.ctrl.close()
            self.ctrl = None
        return got

    def receive(self) -> bool:
        """Every command waiting on any client's pipe; True when there was one."""
        got = False
        for i in list(self.clients):
            conn = self.clients[i][0]
            try:
                while conn.poll(0):
                    got = True
                    if not self.handle(i, conn.recv()):
                        self.leave(i)
                        break
            except (EOFError, OSError):  # that client's process went away
                self.leave(i)
                got = True
        return got

    def send_out(self, touched: list) -> None:
        """One "out" message per client that has tokens in this step; the other clients get
        the stats every STATS_EVERY_S (their /health and queue check stay current)."""
        by: dict[int, list[tuple]] = {}
        for r in touched:
            d = self.delta(r)
            i = self.owner.pop(d[0], None) if d[2] else self.owner.get(d[0])
            if i is not None:
                by.setdefault(i, []).append(d)
        stats = self.stats()
        for i, items in by.items():
            self.post(i, ("out", items, stats))
        if len(by) < len(self.clients):
            now = time.perf_counter()
            if now - self.stats_sent >= STATS_EVERY_S:
                self.stats_sent = now
                for i in list(self.clients):
                    if i not in by:
                        self.post(i, ("stats", stats))

    def post(self, i: int, msg: tuple) -> None:
        client = self.clients.get(i)
        if client is None:
            return
        try:
            client[1].send(msg)
        except OSError:  # that client's end closed
            self.leave(i)

    def leave(self, i: int) -> None:
        """Client `i` closed or went away: its requests are aborted (their blocks freed)."""
        client = self.clients.pop(i, None)
        if client is None:
            return
        mine = [rid for rid, owner in self.owner.items() if owner == i]
        for rid in mine:
            del self.owner[rid]
            if self.held.pop(rid, None) is None:
                self.engine.abort(rid)
                self.sent.pop(rid, None)
        client[0].close()

    def handle(self, i: int, msg: tuple) -> bool:
        """One command of client `i`; False when the client leaves."""
        kind = msg[0]
        if kind == "add":
            self.owner[msg[1]] = i
            if self.hold_s > 0 and self.engine.scheduler.running:
                if not self.held:
                    self.held_since = time.perf_counter()
                self.held[msg[1]] = msg
            else:
                self.add(*msg[1:])
        elif kind == "abort":
            self.owner.pop(msg[1], None)
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
            i = self.owner.pop(rid, None)
            if i is not None:
                self.post(i, ("error", rid, str(e)))
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
    """The core's messages to one client, sent by a thread of their own, so the step loop never
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
        self.sending = False  # a batch taken from `pending` is being written
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
            self.cv.notify_all()

    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` until everything queued has been written (or writing failed)."""
        with self.cv:
            self.cv.wait_for(
                lambda: self.error is not None or not (self.pending or self.sending), timeout
            )

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.pending:
                    self.cv.wait()
                batch, self.pending = self.pending, []
                self.sending = True
            try:
                for m in batch:
                    if m[0] == "out":
                        self.conn.send(("out", list(m[1].values()), m[2]))
                    else:
                        self.conn.send(tuple(m))
            except (OSError, ValueError) as e:  # the server's end closed
                with self.cv:
                    self.error = e if isinstance(e, OSError) else OSError(str(e))
                    self.sending = False
                    self.cv.notify_all()
                return
            with self.cv:
                self.sending = False
                self.cv.notify_all()


def _join(a: tuple, b: tuple) -> tuple:
    """Two consecutive step outputs of one request as one: (rid, samples, finished, cached)."""
    samples = [
        (ta + tb, la + lb if la is not None and lb is not None else None, rb)
        for (ta, la, _), (tb, lb, rb) in zip(a[1], b[1])
    ]
    return (a[0], samples, b[2], b[3])
