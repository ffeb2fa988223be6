"""Does an oversized request still hurt `r1kit serve`? The attacks of issue 16, measured.

    OMP_NUM_THREADS=1 python bench/serve_limits.py       # -> bench/results/serve_limits_cpu.json

`r1kit serve --no-auth` (embedded model) runs in its own process. `streams`: `--streams`
concurrent streamed chats of `--max-tokens` tokens (ignore_eos); the largest gap between two
events of one stream is how long the server left a running stream without output. Measured
alone, then again while five 2 MB chat bodies arrive at once (the issue: they froze 32 streams
for 3.4 s), then the 50 MB body: its status, the time to the answer (the client sends the body
in 1 MiB pieces and stops when the answer comes) and the server's peak resident memory
(VmHWM) before and after (the issue: 77 s frozen, 18 GB). `quota_check`: the key lookup and
quota check of one request against a store with `--rows` usage rows for that key, beside the
SUM over the usage rows the check used to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

OUT = Path(__file__).parent / "results" / "serve_limits_cpu.json"


def start(db: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from r1kit.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--no-auth", "--port", str(port), "--db", db]
    )
    t0 = time.time()
    while time.time() - t0 < 300:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("the server did not start")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of the server and its children (the engine process), MiB."""
    total = 0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


async def stream(c: httpx.AsyncClient, i: int, max_tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": f"What is {i} + 7?"}],
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "seed": i,
    }
    times = []
    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                times.append(time.perf_counter())
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"events": len(times), "max_gap_s": max(gaps, default=0.0), "t": times}


async def big_post(c: httpx.AsyncClient, size: int) -> dict:
    body = json.dumps({"messages": [{"role": "user", "content": "x" * size}]})
    t0 = time.perf_counter()
    r = await c.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    return {
        "status": r.status_code,
        "latency_s": time.perf_counter() - t0,
        "code": r.json()["error"]["code"],
    }


async def streams(url: str, n: int, max_tokens: int, big: int = 0) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        tasks = [asyncio.ensure_future(stream(c, i, max_tokens)) for i in range(n)]
        posts = []
        if big:
            await asyncio.sleep(1.0)  # the streams run
            posts = await asyncio.gather(*[big_post(c, 2 << 20) for _ in range(big)])
        res = await asyncio.gather(*tasks)
    t0 = min(r["t"][0] for r in res)
    t1 = max(r["t"][-1] for r in res)
    return {
        "streams": n,
        "tokens_per_s": round(n * max_tokens / (t1 - t0), 1),
        "max_gap_s": round(max(r["max_gap_s"] for r in res), 3),
        "big_posts": posts,
    }


def huge_body(port: int, size: int = 50 << 20) -> dict:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        f"application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    sent, t0 = 0, time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head + b'{"messages": [{"role": "user", "content": "')
        s.setblocking(False)
        data = b""
        while sent < size and b"\r\n\r\n" not in data:
            try:
                sent += s.send(b"x" * (1 << 20))
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
            try:
                data += s.recv(65536)
            except BlockingIOError:
                pass
        s.setblocking(True)
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return {
        "status": int(data.split()[1]),
        "seconds": round(time.perf_counter() - t0, 3),
        "bytes_sent_before_answer": sent,
    }


def quota_check(rows: int) -> dict:
    from r1kit.serve.store import Store

    d = tempfile.mkdtemp()
    s = Store(Path(d) / "q.db")
    key, k = s.create_key("q", quota_tokens=10**12)
    with s._db:
        s._db.executemany(
            "INSERT INTO usage (key_id, ts, model, endpoint, prompt_tokens, completion_tokens, "
            "reasoning_tokens) VALUES (?, 0, 'm', 'chat', 10, 20, 0)",
            ((k.id,) for _ in range(rows)),
        )
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):  # what Auth.check does now: one keys row, running totals in it
        s.find_key(key).tokens_left()
    now = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(5):  # what it did before: sum the key's usage rows
        s._q("SELECT SUM(prompt_tokens + completion_tokens) FROM usage WHERE key_id = ?", (k.id,))
    before = (time.perf_counter() - t0) / 5
    return {
        "usage_rows": rows,
        "check_ms": round(now * 1e3, 3),
        "usage_scan_ms": round(before * 1e3, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--rows", type=int, default=2_000_000)
    args = ap.parse_args()
    out: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "command": "OMP_NUM_THREADS=1 python bench/serve_limits.py",
    }
    db = str(Path(tempfile.mkdtemp()) / "r1kit.db")
    proc, port = start(db)
    url = f"http://127.0.0.1:{port}"
    try:
        out["streams_alone"] = asyncio.run(streams(url, args.streams, args.max_tokens))
        out["streams_with_five_2MB_posts"] = asyncio.run(
            streams(url, args.streams, args.max_tokens, big=5)
        )
        rss0 = peak_rss_mb(proc.pid)
        out["body_50MB"] = {
            **huge_body(port),
            "server_peak_rss_mb_before": round(rss0),
            "server_peak_rss_mb_after": round(peak_rss_mb(proc.pid)),
        }
        r = httpx.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        out["healthy_after"] = r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    out["quota_check"] = quota_check(args.rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
