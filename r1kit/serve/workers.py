"""`r1kit serve --api-workers N`: N API processes in front of one engine core.

    run_workers(create_app, model, tok, "r1kit-tiny", workers=4, host="127.0.0.1", port=8000,
                db="keys.db", app_kw={"auth": True, ...}, engine_kw={"prefix_cache": True})

This process loads the model, starts the engine core (engine/core.py) with one pipe per API
worker, binds one listening socket per worker on the same port (SO_REUSEPORT: the kernel
spreads new connections evenly over them) and spawns the workers; then it only supervises:
a worker that dies (the OOM killer, kill -9) is restarted with a new pipe to the core (the
core aborts the dead one's requests when its pipe ends) and a new socket on the port, while
the others serve on; workers that keep dying (more than RESTARTS within RESTART_WINDOW_S),
or the core exiting, stop the server (exit 1); SIGINT/SIGTERM stop it cleanly. Each
worker runs the whole FastAPI app (`create_app`, passed in so this module does not import
app.py) on its own event loop, with the tokenizer and the model's card (`ModelCard`: end ids,
what /api/show reports), never the weights, and talks token ids to the core
(`EngineClient`). What must hold over all workers lives outside any one of them: keys, quotas
and reservations, rate limits and usage in the SQLite file (serve/store.py: each reservation
and rate check is one write transaction), the waiting-queue limit in a counter the core's
clients share (`EngineCore.inflight`), the prefix cache and its hit counts in the core.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Any

from r1kit.engine.core import EngineClient, EngineCore
from r1kit.errors import R1kitError
from r1kit.serve import admission
from r1kit.serve.generation import Generator, ModelCard
from r1kit.serve.store import Store

START_TIMEOUT_S = 600
# An API process that dies is restarted, unless more than RESTARTS died within the last
# RESTART_WINDOW_S: then something kills them as fast as they start (memory), and the server
# stops rather than loop
RESTARTS = 3
RESTART_WINDOW_S = 60.0


@dataclass
class WorkerSpec:
    """Everything an API worker builds its app from (pickled to it at spawn)."""

    create_app: Callable[..., Any]  # serve.app.create_app (pickled by name)
    tok: Any
    name: str
    card: ModelCard
    info: dict  # the engine core's max_model_len, max_num_seqs, first stats
    max_waiting: int | None
    db: str
    app_kw: dict
    workers: int
    inline_chars: int | None = None  # admission.INLINE_CHARS override (the bench's A/B)


def bind_sockets(host: str, port: int, n: int, join: bool = False) -> list[socket.socket]:
    """`n` listening sockets on one address (port 0: a free port, the same for all); `join`:
    one more on a port this server's workers hold (a restarted worker's), bound but not yet
    listening: the kernel gives it connections only once its worker serves (uvicorn listens),
    so none waits in its queue while the worker starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        if n > 1 and not join:
            # SO_REUSEPORT lets any process of this user join the port: a second server would
            # silently share it with the first. A plain socket first claims the address (it
            # fails while anything listens there), then gives way to the workers' sockets
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
                port = probe.getsockname()[1]
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if n > 1 or join:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
            if not join:
                s.listen(2048)  # connections queue from now on, before the workers accept
            s.set_inheritable(True)
    except OSError as e:
        for s in socks:
            s.close()
        raise R1kitError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return socks


def run_workers(
    create_app: Callable[..., Any],
    model,
    tok,
    name: str,
    workers: int,
    host: str,
    port: int,
    db: str,
    app_kw: dict,
    max_waiting: int | None = 256,
    engine_kw: dict | None = None,
    inline_chars: int | None = None,
    on_start: Callable[[dict[int, str]], None] | None = None,
    banner: str | None = None,
) -> None:
    """Serve `model` with `workers` API processes until interrupted; `on_start` gets the
    processes' roles by pid ({pid: "engine" | "api0" ...}) once all have started."""
    if str(db) == ":memory:":
        raise R1kitError("--api-workers above 1 needs a database file, not :memory:")
    import torch.multiprocessing as mp

    socks = bind_sockets(host, port, workers)
    port = socks[0].getsockname()[1]
    core = EngineCore(model, workers, **(engine_kw or {}))
    spec = WorkerSpec(
        create_app,
        tok,
        name,
        ModelCard.of(model, tok),
        core.info,
        max_waiting,
        str(db),
        app_kw,
        workers,
        inline_chars,
    )
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    procs: list = []

    def start(i: int, client: int, sock: socket.socket, conn, ready) -> Any:
        p = ctx.Process(
            target=worker_main,
            args=(i, sock, conn, core.inflight, ready, spec, client),
            name=f"r1kit-api-{i}",
            daemon=True,
        )
        p.start()
        return p

    def stop(*_) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        for i in range(workers):
            procs.append(start(i, i, socks[i], core.conns[i], ready))
        core.release()  # the workers hold the pipes now: the core sees each one's end
        for s in socks:
            s.close()  # a dead worker's socket closes with it: the others get its connections
        started, t0 = 0, time.monotonic()
        while started < workers:
            try:
                ready.get(timeout=1.0)
                started += 1
            except queue.Empty:
                dead = any(not p.is_alive() for p in procs) or not core.proc.is_alive()
                if dead or time.monotonic() - t0 > START_TIMEOUT_S:
                    raise R1kitError(
                        "an API worker or the engine process failed to start"
                    ) from None
        if on_start is not None:
            roles = {core.proc.pid: "engine", **{p.pid: f"api{i}" for i, p in enumerate(procs)}}
            on_start(roles)
        if banner:
            print(banner.replace("{port}", str(port)), flush=True)
        deaths: deque[float] = deque()  # when API processes died, within RESTART_WINDOW_S
        clients = workers  # the next client id (a restarted worker's requests get new ids)
        ids = list(range(workers))  # each worker's client id
        store = Store(db)
        while True:
            ended = wait_any([p.sentinel for p in procs] + [core.proc.sentinel])
            for p in [*procs, core.proc]:
                if p.sentinel in ended:  # its pipe closes a moment before its exit code is known
                    p.join(timeout=5)
            dead = [p for p in [*procs, core.proc] if p.exitcode is not None]
            if all(p.exitcode == 0 for p in dead):
                return  # a worker stopped by SIGINT/SIGTERM sent to it (Ctrl-C: the whole group)
            if core.proc.exitcode is not None:
                names = ", ".join(f"{p.name} (exit code {p.exitcode})" for p in dead)
                print(f"r1kit: {names} stopped; stopping the server", file=sys.stderr)
                raise SystemExit(1)
            for i, p in enumerate(procs):
                if not p.exitcode:  # running, or stopped by a signal (the server stops next)
                    continue
                now = time.monotonic()
                deaths.append(now)
                while deaths[0] < now - RESTART_WINDOW_S:
                    deaths.popleft()
                if len(deaths) > RESTARTS:
                    print(
                        f"r1kit: {p.name} {_death(p.exitcode)}: {len(deaths)} API processes "
                        f"died within {RESTART_WINDOW_S:.0f} s; stopping the server",
                        file=sys.stderr,
                    )
                    raise SystemExit(1)
                lost = core.forget(i) if core.inflight is not None else 0
                store.drop_owner(f"api{ids[i]}")  # its quota reservations, never settled now
                try:
                    sock = bind_sockets(host, port, 1, join=True)[0]
                except R1kitError as e:  # every worker was gone, and the port was taken
                    print(f"r1kit: {p.name} {_death(p.exitcode)}; {e}", file=sys.stderr)
                    raise SystemExit(1) from None
                conn = core.join(clients)
                procs[i] = start(i, clients, sock, conn, None)
                ids[i] = clients
                clients += 1
                sock.close()
                conn.close()
                print(
                    f"r1kit: {p.name} (pid {p.pid}) {_death(p.exitcode)} with {lost} "
                    f"request{'s' if lost != 1 else ''} in flight (aborted); restarted it "
                    f"(pid {procs[i].pid})",
                    file=sys.stderr,
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        for p in procs:
            if p.is_alive():
                p.terminate()  # uvicorn's own SIGTERM handling: a graceful stop
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        core.close()  # it exits once every worker's pipe has closed
        ready.close()


def _death(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def worker_main(
    index: int, sock: socket.socket, conn, inflight, ready, spec: WorkerSpec, client_id: int
) -> None:
    """One API worker process: the app over a client of the engine core, on `sock`.
    `client_id`: this process's id among the core's clients (a restarted worker has a new
    one, so its request ids never meet its dead predecessor's); `ready`: None on a restart."""
    import uvicorn

    if spec.inline_chars is not None:
        admission.INLINE_CHARS = spec.inline_chars
    client = EngineClient(
        conn, spec.info, spec.max_waiting, inflight, prefix=f"w{client_id}.", slot=index
    )
    gen = Generator(
        None, spec.tok, spec.name, max_waiting=spec.max_waiting, backend=client, card=spec.card
    )
    store = Store(spec.db, owner=f"api{client_id}")  # reservations held under this process
    app = spec.create_app(gen, store, api_worker=(index, spec.workers), **spec.app_kw)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    # a server killed outright (kill -9) must not leave its API processes serving the port
    # (and the engine core, which ends with their pipes)
    threading.Thread(
        target=_stop_with, args=(multiprocessing.parent_process(),), daemon=True
    ).start()
    if ready is not None:
        ready.put(index)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        gen.close()


def _stop_with(parent) -> None:
    """Stop this worker the way SIGTERM does (uvicorn's graceful stop) once `parent` is gone."""
    wait_any([parent.sentinel])
    os.kill(os.getpid(), signal.SIGTERM)
