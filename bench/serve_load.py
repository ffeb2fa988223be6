"""Load on `r1kit serve`: throughput and time-to-first-token at 1 to 512 concurrent streaming
chat requests, the same load on the bare engine, and a multi-turn workload with and without the
prefix cache.

    python bench/serve_load.py                       # CPU, embedded model -> serve_load_cpu.json
    python bench/serve_load.py --model-shape 0.5B    # GPU, random-init Qwen2.5-0.5B shape (bf16)
    python bench/serve_load.py --url http://host:8000 --key sk-...   # a server already running
    python bench/serve_load.py --model-shape 0.5B --api-workers 1,4 --ab   # GPU: 1 vs 4 API
                                                     # processes, and the A/B below

The server runs in its own process (started here unless --url), so the client's event loop
does not share the server's interpreter. Every request streams `--max-tokens` tokens
(`ignore_eos`), so each level does the same work per request. TTFT is measured from sending the
request to the first chunk that carries text (reasoning or answer). For the random-init shape,
the embedded tokenizer is extended with one added token per id of the 151,936-token vocabulary
so that every sampled id decodes to text.

`bare` runs the same requests (same prompts, seeds, sampling, token counts) on a PagedEngine
stepped directly in a process of its own, so `server_share` is the server's tokens/s over the
engine's. `multi_turn`: `--convs` conversations, each a unique system prompt of about
`--history` tokens; turn 1 asks a question, turn 2 resends the history (plus a fixed assistant
reply) with a new question. Turn 2's TTFT is measured on the server with the prefix cache and
on a second one started with `--no-prefix-cache`; the hits each response reports
(`usage.prompt_cache_hit_tokens`) are checked against the count the cache must give: the
longest common token prefix of the two turns' prompts, cut to whole 32-token blocks, leaving
the last prompt token to compute.

`--api-workers 1,4`: the levels against a server with 1, then 4 API processes in front of the
one engine process (`r1kit serve --api-workers`); `levels` holds the last, `by_api_workers`
all; the multi-turn workload runs with the last. `--ab` adds, at `--ab-level` streams (128):
against the first, the client of runs before 2026-11-30 22:30 UTC (64 streams per client
process, `client_64`); and for each, a server whose short prompts are tokenized the other way
than by default (`--_inline-chars`: on the event loop up to 1,024 characters, or always in a
worker thread), so the JSON separates the client change from inline tokenizing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results"
SHAPES = {
    "0.5B": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
}


BLOCK = 32  # the paged engine's default block size


def model_here(shape: str | None, device: str, decode_all: bool = True):
    """(model, tokenizer, name): the embedded model on CPU, or a random-init shape (with
    `decode_all`, a tokenizer that decodes every id of its vocabulary)."""
    import torch

    from r1kit.modeling import load_model, load_tokenizer

    tok = load_tokenizer(None)
    if shape:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        cfg = Qwen2Config(
            vocab_size=151936,
            max_position_embeddings=32768,
            rope_theta=1e6,
            tie_word_embeddings=True,
            **SHAPES[shape],
        )
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = Qwen2ForCausalLM(cfg).to(device, dtype).eval()
        if decode_all:
            tok.add_tokens([f"<t{i}>" for i in range(len(tok), cfg.vocab_size)])
        name = f"random-qwen2.5-{shape}"
    else:
        model, name = load_model(None).eval(), "r1kit-tiny"
    return model, tok, name


def serve_here(
    port: int,
    shape: str | None,
    device: str = "cuda",
    cache: bool = True,
    thread: bool = False,
    hold_ms: float | None = None,
    workers: int = 1,
    inline_chars: int | None = None,
    roles: str | None = None,
) -> None:
    """The server process (`thread`: the engine on a thread of it, not in a process; `hold_ms`:
    the engine process's burst hold instead of its default; `workers`: API processes, as
    `r1kit serve --api-workers`; `inline_chars`: admission.INLINE_CHARS; `roles`: a file
    that gets {pid: "engine" | "api0" ...} once the processes run)."""
    import tempfile

    import uvicorn

    from r1kit.engine import core
    from r1kit.serve import admission

    if hold_ms is not None:
        core.BURST_HOLD_S = hold_ms / 1000
    if inline_chars is not None:
        admission.INLINE_CHARS = inline_chars

    from r1kit.serve.app import create_app
    from r1kit.serve.generation import Generator
    from r1kit.serve.store import Store
    from r1kit.serve.workers import run_workers

    model, tok, name = model_here(shape, device)
    if workers > 1:
        db = Path(tempfile.mkdtemp(prefix="r1kit-bench-")) / "r1kit.db"

        def on_start(pids: dict[int, str]) -> None:
            if roles:
                Path(roles).write_text(json.dumps(pids))

        return run_workers(
            create_app,
            model,
            tok,
            name,
            workers,
            "127.0.0.1",
            port,
            str(db),
            {"auth": False},
            1024,
            {"prefix_cache": cache},
            inline_chars,
            on_start,
        )
    gen = Generator(model, tok, name, max_waiting=1024, prefix_cache=cache, process=not thread)
    app = create_app(gen, Store(":memory:"), auth=False)
    if roles:
        proc = getattr(gen.engine, "proc", None)
        pids = {os.getpid(): "api0", **({proc.pid: "engine"} if proc else {})}
        Path(roles).write_text(json.dumps(pids))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        gen.close()


def question(i: int) -> list[dict]:
    return [{"role": "user", "content": f"What is {i} + {i % 7}?"}]


def bare_here(shape: str | None, device: str, levels: list[int], max_tokens: int) -> None:
    """The bare engine: the levels' requests stepped directly; one JSON line per level."""
    from r1kit.engine import SamplingParams
    from r1kit.engine.paged import PagedEngine

    model, tok, _ = model_here(shape, device, decode_all=False)
    eng = PagedEngine(model)
    eng.warm_up()  # as the server's engine process does at start

    def ids(i: int) -> list[int]:
        text = tok.apply_chat_template(question(i), tokenize=False, add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def run(n: int, tokens: int) -> dict:
        ps = [
            SamplingParams(temperature=0.6, top_p=0.95, max_tokens=tokens, seed=i) for i in range(n)
        ]
        prompts = [ids(i) for i in range(n)]
        t0 = time.perf_counter()
        reqs = [eng.requests[eng.add_request(p, sp)] for p, sp in zip(prompts, ps)]
        first: dict[int, float] = {}
        while eng.has_work:
            eng.step()
            now = time.perf_counter() - t0
            for k, r in enumerate(reqs):
                if k not in first and r.seqs[0].num_output:
                    first[k] = now
        eng.flush()
        wall = time.perf_counter() - t0
        toks = sum(r.seqs[0].num_output for r in reqs)
        ttfts = sorted(first.values())
        return {
            "concurrency": n,
            "wall_s": round(wall, 3),
            "tokens": toks,
            "tokens_per_s": round(toks / wall, 1),
            **_pcts(ttfts),
        }

    run(1, 4)  # warm-up
    for n in levels:
        print(json.dumps(run(n, max_tokens)), flush=True)


def _pcts(ttfts: list[float]) -> dict:
    ttfts = sorted(ttfts)
    return {
        "ttft_mean_s": round(statistics.mean(ttfts), 4),
        "ttft_p50_s": round(ttfts[len(ttfts) // 2], 4),
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 4),
    }


async def one(
    c: httpx.AsyncClient, i: int, max_tokens: int, model: str, messages: list[dict] | None = None
) -> dict:
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "seed": i,
        "messages": messages or question(i),
        "temperature": 0.6,
        "top_p": 0.95,
        "stream_options": {"include_usage": True},
    }
    t0, sent = time.perf_counter(), time.time()
    ttft, usage = None, {}
    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return {"error": r.status_code, "body": (await r.aread())[:300].decode()}
        async for line in r.aiter_lines():
            # cheap tests first: at 512 streams the client must not be what limits the rate
            if ttft is None and ('"reasoning_content": "' in line or '"content": "' in line):
                d = json.loads(line[6:])["choices"][0]["delta"]
                if d.get("reasoning_content") or d.get("content"):
                    ttft = time.perf_counter() - t0
            if '"usage": {' in line:
                usage = json.loads(line[6:])["usage"]
    return {
        "ttft": ttft,
        "tokens": usage.get("completion_tokens", 0),
        "usage": usage,
        "wall": time.perf_counter() - t0,
        "sent": sent,
        "end": time.time(),
    }


# a client process sends its requests one after another from one event loop, and each
# request's TTFT counts from the moment all of them were due, so the later ones include the
# client's own time to send the earlier ones (not measured apart), which no server can win
# back; up to 8 processes (the H200 host has 16 cores; one per 2 cores on a smaller machine,
# so the clients do not take the cores the server needs: 1 on the 2-core CPU machine) share
# the streams, at least 16 each (runs before 2026-11-30 22:30 UTC: 64 each, 2 processes at
# 128 streams; CPU runs before 2026-12-01 too)
STREAMS_PER_CLIENT = 16
MAX_CLIENTS = max(1, min(8, (os.cpu_count() or 2) // 2))


async def _client(
    url: str, key: str | None, ids: list[int], max_tokens: int, model: str, start: float
) -> list[dict]:
    """One client process's share of a level: its requests all sent at wall-clock `start`."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    n = len(ids)
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as c:
        await one(c, 10_000 + ids[0], 4, model)  # warm-up (and the connection pool)
        await asyncio.sleep(max(0.0, start - time.time()))
        return await asyncio.gather(*[one(c, i, max_tokens, model) for i in ids])


def _client_proc(args: tuple) -> list[dict]:
    return asyncio.run(_client(*args))


def cpu_by_thread(roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the server's processes (`roles`: pid ->
    "engine" | "api0" | ...), each split into its main thread (an API process's event loop,
    the engine's step loop) and its other threads together (an API process's pipe reader and
    tokenizing workers, the engine's sender); Linux /proc, empty elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for p, who in roles.items():
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                f = (t / "stat").read_text().rsplit(")", 1)[1].split()
                name = f"{who}:{'main' if int(t.name) == p else 'other threads'}"
                out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / tick
        except (OSError, IndexError, ValueError):  # exited meanwhile
            continue
    return out


def level(
    url: str,
    key: str | None,
    n: int,
    max_tokens: int,
    model: str,
    roles: dict[int, str] | None = None,
    per_client: int = STREAMS_PER_CLIENT,
) -> dict:
    """n concurrent streams from min(8, ceil(n / per_client)) client processes, all started
    at once; with the server's `roles` (pid -> role), the CPU seconds its processes' threads
    used from before the clients' warm-up request to the level's end (~2 s more than the
    level)."""
    cpu0 = cpu_by_thread(roles or {})
    import concurrent.futures as cf
    import multiprocessing as mp

    k = max(1, min(MAX_CLIENTS, -(-n // per_client)))
    start = time.time() + 2.0 + 0.1 * k  # after every client has connected and warmed up
    shares = [list(range(j, n, k)) for j in range(k)]
    if k == 1:
        rs = _client_proc((url, key, shares[0], max_tokens, model, start))
    else:
        with cf.ProcessPoolExecutor(k, mp_context=mp.get_context("fork")) as ex:
            parts = ex.map(_client_proc, [(url, key, s, max_tokens, model, start) for s in shares])
            rs = [r for part in parts for r in part]
    ok = [r for r in rs if "error" not in r]
    wall = max(r["end"] for r in ok) - min(r["sent"] for r in ok)  # first send to last byte
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    tokens = sum(r["tokens"] for r in ok)
    cpu1 = cpu_by_thread(roles or {})
    busy = {k: round(v - cpu0.get(k, 0.0), 2) for k, v in cpu1.items()}
    return {
        "concurrency": n,
        "client_processes": k,
        "ok": len(ok),
        "errors": len(rs) - len(ok),
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "per_stream_tokens_per_s": round(statistics.mean(r["tokens"] / r["wall"] for r in ok), 1),
        **_pcts(ttfts),
        **({"server_cpu_s": {k: v for k, v in busy.items() if v >= 0.05}} if roles else {}),
    }


def _history(k: int, tokens: int, tok) -> str:
    """A unique system prompt of about `tokens` tokens (conversation k)."""
    text, i = f"Context for chat {k}.", 0
    while len(tok(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += f" Note {i}: {(k * 7919 + i * 104729) % 100000}."
        i += 1
    return text


def _prompt_ids(tok, messages: list[dict]) -> list[int]:
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False)["input_ids"])


async def multi_turn(
    url: str, key: str | None, model: str, convs: int, history: int, max_tokens: int
) -> dict:
    """Turn 1 then turn 2 of `convs` concurrent conversations; turn 2's TTFT and hits."""
    from r1kit.modeling import load_tokenizer

    tok = load_tokenizer(None)  # the prompts' text needs none of the bench's added tokens
    first = [
        [
            {"role": "system", "content": _history(k, history, tok)},
            {"role": "user", "content": "Summarise the notes in one line."},
        ]
        for k in range(convs)
    ]
    second = [
        m
        + [
            {"role": "assistant", "content": "The notes list values."},
            {"role": "user", "content": "Which value is the largest?"},
        ]
        for m in first
    ]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=convs + 8, max_keepalive_connections=convs + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as c:
        t1 = await asyncio.gather(
            *[one(c, 1000 + k, max_tokens, model, m) for k, m in enumerate(first)]
        )
        t2 = await asyncio.gather(
            *[one(c, 2000 + k, max_tokens, model, m) for k, m in enumerate(second)]
        )
    failed = [r for r in t1 + t2 if "error" in r]
    if failed:
        raise SystemExit(f"multi-turn requests failed: {failed[0]}")
    hits, want = [], []
    for a, b, r in zip(first, second, t2):
        ia, ib = _prompt_ids(tok, a), _prompt_ids(tok, b)
        lcp = next((i for i, (x, y) in enumerate(zip(ia, ib)) if x != y), min(len(ia), len(ib)))
        p2 = r["usage"]["prompt_tokens"]
        off = p2 - len(ib)  # tokens the server adds in front (a BOS), the same in both turns
        want.append(min(lcp + off, p2 - 1) // BLOCK * BLOCK)
        hits.append(r["usage"].get("prompt_cache_hit_tokens", 0))
    return {
        "convs": convs,
        "turn1_prompt_tokens": [r["usage"]["prompt_tokens"] for r in t1],
        "turn2_prompt_tokens": [r["usage"]["prompt_tokens"] for r in t2],
        "turn1": _pcts([r["ttft"] for r in t1]),
        "turn2": _pcts([r["ttft"] for r in t2]),
        "turn2_hit_tokens": hits,
        "turn2_expected_hit_tokens": want,
        "turn1_hit_tokens": [r["usage"].get("prompt_cache_hit_tokens", 0) for r in t1],
    }


def start_server(args: list[str]) -> tuple[subprocess.Popen, str, dict[int, str]]:
    """A server process (`--_serve`), its URL and its processes' roles by pid."""
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    roles = Path(tempfile.mkdtemp(prefix="r1kit-bench-")) / "roles.json"
    cmd = [sys.executable, __file__, "--_serve", str(port), "--_roles", str(roles), *args]
    proc = subprocess.Popen(cmd)
    t0 = time.time()
    while True:
        try:
            up = httpx.get(url + "/health", timeout=2).status_code == 200
            if up and roles.exists():
                return proc, url, {int(k): v for k, v in json.loads(roles.read_text()).items()}
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None or time.time() - t0 > 600:
            raise SystemExit("the server did not start")
        time.sleep(0.5)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="a running server (default: start one here)")
    ap.add_argument("--key", default=os.environ.get("R1KIT_API_KEY"))
    ap.add_argument("--model-shape", choices=sorted(SHAPES), default=None)
    ap.add_argument("--levels", default=None, help="default 1,8,32,128,256 CPU, +512 GPU")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 64 CPU, 256 GPU")
    ap.add_argument("--convs", type=int, default=None, help="multi-turn: default 4 CPU, 16 GPU")
    ap.add_argument("--history", type=int, default=None, help="default 700 CPU, 2000 GPU")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare engine")
    ap.add_argument("--no-multi-turn", action="store_true")
    ap.add_argument(
        "--api-workers",
        default="1",
        help="API processes of the server (r1kit serve --api-workers); a list such as 1,4 "
        "runs the levels against each in turn",
    )
    ap.add_argument(
        "--ab",
        action="store_true",
        help="at --ab-level streams: the old client (64 streams per process) and the other "
        "tokenizing (inline up to 1,024 characters, or always in a thread), against the "
        "first --api-workers",
    )
    ap.add_argument("--ab-level", type=int, default=128)
    ap.add_argument(
        "--engine-thread",
        action="store_true",
        help="the server steps the engine on a thread of its own process (the old "
        "design), not in an engine process",
    )
    ap.add_argument(
        "--hold-ms",
        type=float,
        default=None,
        help="the engine process's burst hold (engine/core.py BURST_HOLD_S; 0: none)",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", help="for --model-shape (cpu: a smoke test)")
    ap.add_argument("--_serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_no-cache", dest="_no_cache", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_thread", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_hold", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument(
        "--_inline-chars", dest="_inline", type=int, default=None, help=argparse.SUPPRESS
    )
    ap.add_argument("--_roles", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    gpu = bool(a.model_shape) and a.device == "cuda"
    levels = [
        int(x) for x in (a.levels or ("1,8,32,128,256,512" if gpu else "1,8,32,128,256")).split(",")
    ]
    max_tokens = a.max_tokens or (256 if a.model_shape else 64)
    if a._serve:
        return serve_here(
            a._serve,
            a.model_shape,
            a.device,
            not a._no_cache,
            a._thread,
            a._hold,
            a._workers,
            a._inline,
            a._roles,
        )
    if a._bare:
        return bare_here(a.model_shape, a.device, levels, max_tokens)
    workers = [int(x) for x in a.api_workers.split(",")]
    if a.engine_thread and workers != [1]:
        raise SystemExit("--engine-thread serves with one API process: --api-workers 1")
    out = Path(a.out or RESULTS / f"serve_load_{'gpu' if a.model_shape else 'cpu'}.json")
    shape_args = ["--model-shape", a.model_shape, "--device", a.device] if a.model_shape else []
    server_args = [*shape_args, "--_thread"] if a.engine_thread else shape_args
    if a.hold_ms is not None:
        server_args = [*server_args, "--_hold", str(a.hold_ms)]
    import torch

    from r1kit.engine import core
    from r1kit.serve import admission

    res = {
        "max_tokens": max_tokens,
        "url": a.url or "local",
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "cpu_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "levels": [],
        "engine": "thread" if a.engine_thread else "process",
        "api_workers": workers[-1],
        "by_api_workers": {},
        "inline_chars": admission.INLINE_CHARS,
        "streams_per_client": STREAMS_PER_CLIENT,
        "max_client_processes": MAX_CLIENTS,
        "burst_hold_ms": a.hold_ms if a.hold_ms is not None else core.BURST_HOLD_S * 1000,
        "bare": [],
        "ab": {},
        "multi_turn": {},
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")

    if a.url is None and not a.no_bare:  # the bare engine first, alone on the machine
        cmd = [
            sys.executable,
            __file__,
            "--_bare",
            "--levels",
            ",".join(map(str, sorted({*levels, *([a.ab_level] if a.ab else [])}))),
            "--max-tokens",
            str(max_tokens),
            *shape_args,
        ]
        run = subprocess.run(cmd, check=True, capture_output=True, text=True)
        for line in run.stdout.splitlines():
            if line.startswith("{"):
                res["bare"].append(json.loads(line))
                print("bare", line, flush=True)
        save()
    bare = {b["concurrency"]: b["tokens_per_s"] for b in res["bare"]}
    headers = {"Authorization": f"Bearer {a.key}"} if a.key else {}
    convs = a.convs or (16 if gpu else 4)
    history = a.history or (2000 if a.model_shape else 700)
    model = None

    def measure(url, roles, n: int, per_client: int = STREAMS_PER_CLIENT) -> dict:
        r = level(url, a.key, n, max_tokens, model, roles, per_client)
        if n in bare:
            r["server_share"] = round(r["tokens_per_s"] / bare[n], 3)
        print(json.dumps(r), flush=True)
        return r

    for w in workers if a.url is None else [None]:
        args = [*server_args, "--_workers", str(w)] if w else []
        proc, url, roles = start_server(args) if a.url is None else (None, a.url, None)
        try:
            model = httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
            res["model"] = model
            print(f"api workers: {w}", flush=True)
            runs = res["by_api_workers"][str(w)] = []
            for n in levels:
                runs.append(measure(url, roles, n))
                save()
            res["levels"] = runs
            if a.ab and w == workers[0]:
                print(f"A/B: the old client, {a.ab_level} streams", flush=True)
                res["ab"]["client_64"] = measure(url, roles, a.ab_level, per_client=64)
                res["ab"]["client_64"]["api_workers"] = w
                save()
            if not a.no_multi_turn and (w == workers[-1] or w is None):
                mt = asyncio.run(multi_turn(url, a.key, model, convs, history, 16))
                res["multi_turn"]["cache"] = mt
                res["multi_turn"]["api_workers"] = w
                print("multi-turn, cache:", json.dumps(mt), flush=True)
                save()
        finally:
            stop(proc)
    other = 0 if admission.INLINE_CHARS else 1024
    for w in workers if a.ab and a.url is None else []:
        print(f"A/B: {w} API processes tokenizing inline up to {other} characters", flush=True)
        proc, url, roles = start_server(
            [*server_args, "--_workers", str(w), "--_inline-chars", str(other)]
        )
        try:
            r = measure(url, roles, a.ab_level)
        finally:
            stop(proc)
        res["ab"][f"inline_{other}_api_workers_{w}"] = {
            **r,
            "api_workers": w,
            "inline_chars": other,
        }
        save()
    if not a.no_multi_turn and a.url is None:
        w = workers[-1]
        proc, url, _ = start_server([*server_args, "--_workers", str(w), "--_no-cache"])
        try:
            mt = asyncio.run(multi_turn(url, None, model, convs, history, 16))
        finally:
            stop(proc)
        res["multi_turn"]["no_cache"] = mt
        print("multi-turn, no cache:", json.dumps(mt), flush=True)
        on, off = res["multi_turn"]["cache"], mt
        res["multi_turn"]["turn2_ttft_p50_speedup"] = round(
            off["turn2"]["ttft_p50_s"] / on["turn2"]["ttft_p50_s"], 2
        )
        res["multi_turn"]["hits_exact"] = on["turn2_hit_tokens"] == on["turn2_expected_hit_tokens"]
        save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
