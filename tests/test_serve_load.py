"""32 concurrent streaming requests on the embedded model: all complete correctly, and the
batch takes well under 32 sequential requests (the engine batches them)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from serve_server import MODEL, shared

N, TOKENS = 32, 48


@pytest.fixture(scope="module")
def srv():
    return shared()


async def _stream(c: httpx.AsyncClient, seed: int) -> tuple[str, str, str, int]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"What is {seed} + 3?"}],
        "stream": True,
        "max_tokens": TOKENS,
        "seed": seed,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    r_, c_, finish, usage = "", "", None, 0
    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for ch in chunk["choices"]:
                r_ += ch["delta"].get("reasoning_content") or ""
                c_ += ch["delta"].get("content") or ""
                finish = ch["finish_reason"] or finish
    return r_, c_, finish, usage


def test_32_concurrent_streams(srv):
    async def main(seeds, concurrent: bool):
        async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=120) as c:
            if concurrent:
                return await asyncio.gather(*[_stream(c, s) for s in seeds])
            return [await _stream(c, s) for s in seeds]

    asyncio.run(main([0], False))  # warm-up
    t0 = time.perf_counter()
    seq = asyncio.run(main(range(4), False))
    one = (time.perf_counter() - t0) / 4
    t0 = time.perf_counter()
    conc = asyncio.run(main(range(N), True))
    total = time.perf_counter() - t0
    assert all(f == "length" and u == TOKENS for _, _, f, u in conc)
    assert conc[:4] == seq, "batched streams give the same text as sequential ones (seeded)"
    ratio = total / (N * one)
    print(f"\n32 concurrent streams: {total:.2f}s; one request {one:.3f}s; ratio {ratio:.3f}")
    assert ratio < 0.5, ratio
