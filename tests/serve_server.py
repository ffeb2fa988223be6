"""r1kit's server on a free loopback port in a background thread, for the serve tests.

`shared()` starts one server over the embedded model for the whole session (keys in a
temporary SQLite file); `Server(...)` starts a separate one with its own engine settings.
"""

from __future__ import annotations

import atexit
import socket
import tempfile
import threading
import time
from pathlib import Path

MODEL = "r1kit-tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        auth: bool = True,
        max_waiting: int | None = 64,
        app_kw: dict | None = None,
        **engine_kw,
    ) -> None:
        import uvicorn

        from r1kit.serve.app import create_app
        from r1kit.serve.generation import Generator
        from r1kit.serve.store import Store

        self.dir = tempfile.mkdtemp(prefix="r1kit-serve-")
        self.gen = Generator(
            _model(),
            _tokenizer(),
            MODEL,
            max_waiting=max_waiting,
            **{"kv_memory": 32 << 20, **engine_kw},
        )
        self.store = Store(Path(self.dir) / "r1kit.db")
        self.key, _ = self.store.create_key("tests")
        self.app = create_app(self.gen, self.store, auth=auth, **(app_kw or {}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 30:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.gen.close()


_cache: dict = {}


def _model():
    if "model" not in _cache:
        from r1kit.modeling import load_model

        _cache["model"] = load_model(None).eval()
    return _cache["model"]


def _tokenizer():
    if "tok" not in _cache:
        from r1kit.modeling import load_tokenizer

        _cache["tok"] = load_tokenizer(None)
    return _cache["tok"]


def shared() -> Server:
    if "server" not in _cache:
        _cache["server"] = Server()
        atexit.register(_cache["server"].close)
    return _cache["server"]


_seeds: dict = {}


def find_seed(srv, msgs, max_tokens=120):
    """A seed whose completion closes its reasoning and stops (the tiny model does not always),
    found with the engine directly: seeded samples are the same whatever the batch."""
    from r1kit.chat import split_reasoning
    from r1kit.engine import SamplingParams
    from r1kit.engine.paged import PagedEngine

    key = str(msgs)
    if key not in _seeds:
        gen = srv.gen
        ids = gen.encode(gen.render(msgs))
        eng = PagedEngine(gen.model, kv_memory=16 << 20)
        ps = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=0.6,
                top_p=0.95,
                seed=seed,
                stop_token_ids=gen.eos_ids,
            )
            for seed in range(32)
        ]
        outs = eng.generate([ids] * len(ps), ps)
        for seed, o in enumerate(outs):
            toks = o.samples[0].token_ids
            r, a = split_reasoning(gen.tok.decode(toks, skip_special_tokens=True))
            if r and a and o.samples[0].finish_reason == "stop":
                _seeds[key] = (seed, r, a, len(toks))
                break
        else:
            raise AssertionError("no seed closes the reasoning")
    return _seeds[key]
