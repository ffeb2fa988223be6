"""Load on `r1kit serve`: throughput and time-to-first-token at 1, 8, 32, 128 concurrent
streaming chat requests.

    python bench/serve_load.py                       # CPU, embedded model -> serve_load_cpu.json
    python bench/serve_load.py --model-shape 0.5B    # GPU, random-init Qwen2.5-0.5B shape (bf16)
    python bench/serve_load.py --url http://host:8000 --key sk-...   # a server already running

The server runs in its own process (started here unless --url), so the client's event loop
does not share the server's interpreter. Every request streams `--max-tokens` tokens
(`ignore_eos`), so each level does the same work per request. TTFT is measured from sending the
request to the first chunk that carries text (reasoning or answer). For the random-init shape,
the embedded tokenizer is extended with one added token per id of the 151,936-token vocabulary
so that every sampled id decodes to text.
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
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2),
}  # fmt: skip


def serve_here(port: int, shape: str | None, device: str = "cuda") -> None:
    """The server process: embedded model on CPU, or a random-init shape on the GPU."""
    import torch
    import uvicorn

    from r1kit.modeling import load_model, load_tokenizer
    from r1kit.serve.app import create_app
    from r1kit.serve.generation import Generator
    from r1kit.serve.store import Store

    tok = load_tokenizer(None)
    if shape:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                          tie_word_embeddings=True, **SHAPES[shape])  # fmt: skip
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = Qwen2ForCausalLM(cfg).to(device, dtype).eval()
        tok.add_tokens([f"<t{i}>" for i in range(len(tok), cfg.vocab_size)])
        name = f"random-qwen2.5-{shape}"
    else:
        model, name = load_model(None).eval(), "r1kit-tiny"
    gen = Generator(model, tok, name, max_waiting=1024)
    app = create_app(gen, Store(":memory:"), auth=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def one(c: httpx.AsyncClient, i: int, max_tokens: int, model: str) -> dict:
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
            "seed": i, "messages": [{"role": "user", "content": f"What is {i} + {i % 7}?"}],
            "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return {"error": r.status_code}
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for ch in chunk["choices"]:
                d = ch["delta"]
                if ttft is None and (d.get("reasoning_content") or d.get("content")):
                    ttft = time.perf_counter() - t0
    return {"ttft": ttft, "tokens": tokens, "wall": time.perf_counter() - t0}


async def level(url: str, key: str | None, n: int, max_tokens: int, model: str) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as c:
        await one(c, 10_000, 4, model)  # warm-up
        t0 = time.perf_counter()
        rs = await asyncio.gather(*[one(c, i, max_tokens, model) for i in range(n)])
        wall = time.perf_counter() - t0
    ok = [r for r in rs if "error" not in r]
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": n,
        "ok": len(ok),
        "errors": len(rs) - len(ok),
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "per_stream_tokens_per_s": round(statistics.mean(r["tokens"] / r["wall"] for r in ok), 1),
        "ttft_mean_s": round(statistics.mean(ttfts), 4),
        "ttft_p50_s": round(ttfts[len(ttfts) // 2], 4),
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="a running server (default: start one here)")
    ap.add_argument("--key", default=os.environ.get("R1KIT_API_KEY"))
    ap.add_argument("--model-shape", choices=sorted(SHAPES), default=None)
    ap.add_argument("--levels", default="1,8,32,128")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 64 CPU, 256 GPU")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", help="for --model-shape (cpu: a smoke test)")
    ap.add_argument("--_serve", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._serve:
        return serve_here(a._serve, a.model_shape, a.device)
    max_tokens = a.max_tokens or (256 if a.model_shape else 64)
    out = Path(a.out or RESULTS / f"serve_load_{'gpu' if a.model_shape else 'cpu'}.json")
    proc, url = None, a.url
    if url is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, __file__, "--_serve", str(port)]
        cmd += ["--model-shape", a.model_shape, "--device", a.device] if a.model_shape else []
        proc = subprocess.Popen(cmd)
        t0 = time.time()
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() - t0 > 600:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
    try:
        headers = {"Authorization": f"Bearer {a.key}"} if a.key else {}
        model = httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
        import torch

        res = {"model": model, "max_tokens": max_tokens, "url": url if a.url else "local",
               "device": torch.cuda.get_device_name() if a.model_shape and a.device == "cuda"
               else "cpu",
               "cpu_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "levels": []}  # fmt: skip
        for n in (int(x) for x in a.levels.split(",")):
            r = asyncio.run(level(url, a.key, n, max_tokens, model))
            print(json.dumps(r), flush=True)
            res["levels"].append(r)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
