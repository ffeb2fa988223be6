"""`create_app`: the FastAPI app over one Generator, store and auth; `serve` runs it.

gen = Generator(load_model(None), load_tokenizer(None), "r1kit-tiny")
app = create_app(gen, Store("keys.db"))
uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from r1kit.chat import set_template
from r1kit.engine import engine_kind
from r1kit.errors import R1kitError
from r1kit.modeling import EMBEDDED_NAMES, device_of, load_model, load_tokenizer, resolve_model
from r1kit.serve import ollama_api, openai_api, web_api
from r1kit.serve.auth import Auth
from r1kit.serve.errors import (
    APIError,
    api_error_handler,
    http_error_handler,
    server_error_handler,
)
from r1kit.serve.generation import Generator
from r1kit.serve.llamacpp import GGUFGenerator
from r1kit.serve.security import DEFAULT_MAX_BODY, BodyLimit, LocalOnly
from r1kit.serve.store import Store
from r1kit.serve.workers import bind_sockets, run_workers

WEB = Path(__file__).parent / "web"
# API processes `r1kit serve` runs by default in front of a paged engine on CUDA (one on CPU,
# where the engine, the API processes and the clients share a few cores): README, "Why an
# engine process", for the measurement behind it
DEFAULT_API_WORKERS_CUDA = 4


def create_app(
    gen: Generator,
    store: Store,
    auth: bool = True,
    rpm: int | None = None,
    model_path: str = "",
    max_body: int = DEFAULT_MAX_BODY,
    host: str = "127.0.0.1",
    allow_origins: tuple[str, ...] = (),
    keepalive_s: float = 10.0,
    api_worker: tuple[int, int] = (0, 1),
) -> FastAPI:
    """`max_body`: bytes per request body (413 past it); with auth off, requests must address
    `host` (or a loopback name) and come from it or one of `allow_origins`; CORS answers only
    `allow_origins`; SSE streams send `: keep-alive` every `keepalive_s` while they wait.
    `api_worker`: (this API process's index, how many serve the port), for /health."""
    app = FastAPI(title="r1kit", docs_url=None, redoc_url=None, openapi_url=None)
    s = app.state
    s.gen, s.store, s.auth = gen, store, Auth(store, enabled=auth, default_rpm=rpm)
    s.keepalive_s = keepalive_s
    # outermost last: CORS (preflights), then the Host/Origin guard, then the body cap
    app.add_middleware(BodyLimit, max_body=max_body)
    if not auth:
        app.add_middleware(LocalOnly, host=host, allow_origins=tuple(allow_origins))
    if allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(allow_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    s.model_names = {gen.name, gen.name + ":latest"}
    s.created = int(time.time())
    s.model_path = model_path or gen.name
    s.digest = hashlib.sha256(s.model_path.encode()).hexdigest()
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, server_error_handler)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)
    app.include_router(web_api.router)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(WEB / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():  # the page names it; a browser on another route asks here
        return FileResponse(WEB / "icon.svg", media_type="image/svg+xml")

    @app.get("/health", include_in_schema=False)
    async def health():
        return {
            "status": "ok",
            **gen.stats(),
            "api_worker": api_worker[0],
            "api_workers": api_worker[1],
            "pid": os.getpid(),  # the API process that answered
        }

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    db: str | None = None,
    no_auth: bool = False,
    engine: str = "auto",
    max_waiting: int = 256,
    rpm: int | None = None,
    name: str | None = None,
    device: str | None = None,
    template: str = "auto",
    max_body: int = DEFAULT_MAX_BODY,
    allow_origin: tuple[str, ...] = (),
    prefix_cache: bool = True,
    api_workers: int | None = None,
) -> None:
    """Load the model and serve it until interrupted (the `r1kit serve` job). `api_workers`
    API processes serve the port in front of one engine process (serve/workers.py); None: 4
    where the paged engine runs on CUDA, else 1 (README, "Why this process layout")."""
    import uvicorn

    if no_auth and not is_loopback(host):
        raise R1kitError(f"--no-auth is allowed only on a loopback address, not {host}")
    if max_body < 1024:
        raise R1kitError(f"--max-body must be at least 1024 bytes, not {max_body}")
    if api_workers is not None and api_workers < 1:
        raise R1kitError(f"--api-workers must be at least 1, not {api_workers}")
    auth_note = "no auth" if no_auth else "keys in {db} (`r1kit keys create`)"
    banner = "r1kit: serving {name} on http://{host}:{port} ({auth}); web chat at /"
    gguf = model is not None and model.endswith(".gguf")
    if gguf and api_workers is not None and api_workers > 1:
        raise R1kitError("--api-workers above 1 needs the paged engine, not llama.cpp (.gguf)")
    bind_sockets(host, port, 1)[0].close()  # a port in use: one line now, not after the load
    if api_workers == 1 or gguf:
        gen, path = make_generator(model, engine, max_waiting, name, device, template, prefix_cache)
    else:
        device = device or device_of("auto")
        lm, tok, name, path = _load(model, device, name)
        workers = api_workers or (DEFAULT_API_WORKERS_CUDA if str(device).startswith("cuda") else 1)
        if workers > 1 and engine_kind(lm, engine) != "paged":
            if api_workers is not None:
                raise R1kitError("--api-workers above 1 needs the paged engine (--engine paged)")
            workers = 1
        if template != "auto":
            set_template(tok, template)
        if workers > 1:
            store = Store(db)
            store.clear_reservations()  # left by a server killed mid-request
            app_kw = dict(
                auth=not no_auth,
                rpm=rpm,
                model_path=path,
                max_body=max_body,
                host=host,
                allow_origins=tuple(allow_origin),
            )
            text = banner.format(
                name=name, host=host, port="{port}", auth=auth_note.format(db=store.path)
            )
            run_workers(
                create_app,
                lm,
                tok,
                name,
                workers,
                host,
                port,
                str(store.path),
                app_kw,
                max_waiting,
                {"prefix_cache": prefix_cache},
                banner=f"{text} ({workers} API processes)",
            )
            return
        gen = Generator(
            lm, tok, name, engine=engine, max_waiting=max_waiting, prefix_cache=prefix_cache
        )
    name = gen.name
    store = Store(db)
    store.clear_reservations()  # left by a server killed mid-request
    app = create_app(
        gen,
        store,
        auth=not no_auth,
        rpm=rpm,
        model_path=path,
        max_body=max_body,
        host=host,
        allow_origins=tuple(allow_origin),
    )
    note = auth_note.format(db=store.path)
    try:
        # bound here, not by uvicorn: a port in use is one line before the banner, not a
        # banner followed by uvicorn's log of the failure
        sock = bind_sockets(host, port, 1)[0]
        port = sock.getsockname()[1]
        print(banner.format(name=name, host=host, port=port, auth=note), flush=True)
        # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
        # it found: SIGTERM's default would end the process before the engine is closed
        old = signal.signal(signal.SIGTERM, _interrupt)
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        finally:
            signal.signal(signal.SIGTERM, old)
    except KeyboardInterrupt:
        pass
    finally:
        gen.close()


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def make_generator(
    model: str | None,
    engine: str = "auto",
    max_waiting: int | None = 256,
    name: str | None = None,
    device: str | None = None,
    template: str = "auto",
    prefix_cache: bool = True,
) -> tuple[Generator, str]:
    """The Generator for a model spec and the path it was loaded from: a `.gguf` file runs on
    llama.cpp (serve/llamacpp.py), anything else on r1kit's engine over the torch model.
    `template` auto renders chats in the model's own format (its chat template); r1zero or
    chat overrides it."""
    gen, path = _generator(model, engine, max_waiting, name, device, prefix_cache)
    if template != "auto":
        gen.use_template(template)
    return gen, path


def _generator(
    model, engine, max_waiting, name, device, prefix_cache=True
) -> tuple[Generator, str]:
    if model is not None and model.endswith(".gguf"):
        return GGUFGenerator(model, name, max_waiting=max_waiting), model
    lm, tok, name, path = _load(model, device or device_of("auto"), name)
    gen = Generator(
        lm, tok, name, engine=engine, max_waiting=max_waiting, prefix_cache=prefix_cache
    )
    return gen, path


def _load(model: str | None, device: str, name: str | None) -> tuple:
    """(torch model, tokenizer, the name clients see, the path it was loaded from)."""
    path = resolve_model(model)
    name = name or ("r1kit-tiny" if model is None or model in EMBEDDED_NAMES else _name(model))
    return load_model(model, device=device).eval(), load_tokenizer(model), name, path


def _name(model: str) -> str:
    p = Path(model.rstrip("/"))
    return p.name if p.name not in ("final", "") else p.parent.name
