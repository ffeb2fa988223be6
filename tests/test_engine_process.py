"""The engine core in its own process (r1kit/engine/core.py) behind the StreamingEngine
interface: the same tokens and log-probs as the paged engine stepped in this process, aborts
free the blocks, refused prompts fail only their request, and the stats follow."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import torch

from r1kit.engine import SamplingParams
from r1kit.engine import core as core_mod
from r1kit.engine.core import EngineProcess
from r1kit.engine.paged import PagedEngine

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [3, 1, 4, 1, 5], [40]]


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(5)
    cfg = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.5,
    )
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def core(model):
    eng = EngineProcess(model, max_waiting=8, block_size=4, max_num_seqs=8)
    yield eng
    eng.close()
    assert not eng.proc.is_alive()


async def _collect(src) -> tuple[list[list[int]], list[list[float]], list[str], int]:
    toks, lps, reasons, deltas = None, None, None, 0
    async for out, _ in src:
        deltas += 1
        if toks is None:
            toks, lps = [[] for _ in out.samples], [[] for _ in out.samples]
        for j, s in enumerate(out.samples):
            toks[j] += s.token_ids
            lps[j] += s.logprobs or []
        reasons = [s.finish_reason for s in out.samples]
    return toks, lps, reasons, deltas


def test_same_samples_as_the_engine_here(model, core):
    params = [
        SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=i, logprobs=True)
        for i in range(len(PROMPTS))
    ]
    want = PagedEngine(model, block_size=4, max_num_seqs=8).generate(PROMPTS, params)

    async def main():
        return await asyncio.gather(*[_collect(core.open(p, sp)) for p, sp in zip(PROMPTS, params)])

    got = asyncio.run(main())
    for (toks, lps, reasons, _), w in zip(got, want):
        assert toks == [s.token_ids for s in w.samples]
        assert reasons == ["length", "length"]
        for a, s in zip(lps, w.samples):
            torch.testing.assert_close(a, s.logprobs, atol=1e-5, rtol=0)


def _idle(core) -> dict:
    t0 = time.time()
    while core.stats()["requests"] and time.time() - t0 < 30:
        time.sleep(0.02)
    return core.stats()


def test_leaving_aborts_and_frees_blocks(core):
    async def main():
        src = core.open(PROMPTS[0], SamplingParams(max_tokens=100, temperature=1.0, seed=1))
        async for _ in src:
            break
        await src.aclose()

    asyncio.run(main())
    st = _idle(core)
    assert st["requests"] == 0 and st["running"] == 0
    assert st["free_blocks"] == st["total_blocks"] - 1


def test_refused_prompt_fails_only_its_request(core):
    async def main():
        bad = _collect(core.open([500], SamplingParams(max_tokens=4)))  # id past the vocab
        good = _collect(core.open(PROMPTS[1], SamplingParams(max_tokens=4, temperature=0.0)))
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = asyncio.run(main())
    assert isinstance(bad, ValueError) and "token ids" in str(bad)
    assert len(good[0][0]) == 4
    assert _idle(core)["requests"] == 0


def test_full_queue_raises_at_once(model):
    one = EngineProcess(model, max_waiting=1, block_size=4, max_num_seqs=1)
    try:

        async def main():
            p = SamplingParams(max_tokens=30, temperature=0.0)
            a, b = one.open(PROMPTS[0], p), one.open(PROMPTS[1], p)  # one runs, one waits
            with pytest.raises(OverflowError):
                one.open(PROMPTS[2], p)
            return await asyncio.gather(_collect(a), _collect(b))

        outs = asyncio.run(main())
        assert [len(o[0][0]) for o in outs] == [30, 30]
    finally:
        one.close()


def test_requests_arriving_during_decode_are_held_then_prefilled_together(model, monkeypatch):
    """With a hold longer than the test, requests that reach the core while another decodes
    wait until it ends (no running sequence left), then run with the same tokens as alone; one
    aborted while held never reaches the engine and leaves nothing behind."""
    monkeypatch.setattr(core_mod, "BURST_HOLD_S", 60.0)
    eng = EngineProcess(model, max_waiting=8, block_size=4, max_num_seqs=8)
    p = [SamplingParams(max_tokens=n, temperature=1.0, seed=i) for i, n in enumerate((90, 8, 8))]
    want = PagedEngine(model, block_size=4, max_num_seqs=8).generate(PROMPTS, p)
    events: list[tuple[int, bool]] = []

    async def run(i: int, src) -> list[int]:
        toks = []
        async for out, done in src:
            events.append((i, done))
            toks += out.samples[0].token_ids
        return toks

    async def main():
        a = eng.open(PROMPTS[0], p[0])
        first, _ = await a.__anext__()  # A decodes now
        events.append((0, False))
        gone = asyncio.ensure_future(run(9, eng.open(PROMPTS[1], p[1])))  # held, then left
        await asyncio.sleep(0.05)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        rest = await asyncio.gather(
            run(0, a), *[run(i, eng.open(PROMPTS[i], p[i])) for i in (1, 2)]
        )
        return [first.samples[0].token_ids + rest[0], *rest[1:]]

    try:
        got = asyncio.run(main())
        assert got == [w.samples[0].token_ids for w in want]
        a_end = events.index((0, True))
        assert all(k > a_end for k, (i, _) in enumerate(events) if i != 0)
        st = _idle(eng)
        assert st["requests"] == 0 and st["waiting"] == 0
        assert st["free_blocks"] == st["total_blocks"] - 1
    finally:
        eng.close()


def test_one_core_serves_two_clients(model):
    """EngineCore with two pipes (as `r1kit serve --api-workers 2` has): each client gets its
    own requests' tokens, the same as the engine here; the queue limit counts both clients'
    requests; a client that leaves has its running request aborted while the other's runs on."""
    core = core_mod.EngineCore(model, 2, block_size=4, max_num_seqs=1)
    a, b = (
        core_mod.EngineClient(core.conns[i], core.info, 1, core.inflight, f"w{i}.", slot=i)
        for i in range(2)
    )
    p = [SamplingParams(max_tokens=12, temperature=1.0, seed=i) for i in range(2)]
    want = PagedEngine(model, block_size=4, max_num_seqs=1).generate(PROMPTS[:2], p)
    try:

        async def main():
            ra, rb = a.open(PROMPTS[0], p[0]), b.open(PROMPTS[1], p[1])  # one runs, one waits
            with pytest.raises(OverflowError):  # the queue (1) is full, whoever asks
                a.open(PROMPTS[2], p[0])
            return await asyncio.gather(_collect(ra), _collect(rb))

        got = asyncio.run(main())
        assert [g[0] for g in got] == [[w.samples[0].token_ids] for w in want]
        assert sum(core.inflight.get_obj()) == 0
        for c in (a, b):  # the idle core's stats have reached both (no request waits)
            t0 = time.time()
            while (c.stats()["requests"] or c.stats()["waiting"]) and time.time() - t0 < 30:
                time.sleep(0.02)

        async def leave():
            src = a.open(PROMPTS[0], SamplingParams(max_tokens=100, temperature=1.0, seed=3))
            async for _ in src:
                break
            a.close()  # the core aborts a's request: b's is not queued behind it
            return await _collect(b.open(PROMPTS[1], p[1]))

        assert asyncio.run(leave())[0] == [want[1].samples[0].token_ids]
        st = _idle(b)
        assert st["requests"] == 0 and st["free_blocks"] == st["total_blocks"] - 1
    finally:
        a.close()
        b.close()
        core.close()
    assert not core.proc.is_alive()
