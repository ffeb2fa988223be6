"""A request's stream (r1kit/engine/streaming.py: Stream) aborts its request exactly when its
consumer leaves before the end: on aclose() even before the first read, on cancellation, and
when it is collected unread; never after it finished or failed. Then the same against the real
engine process: a request closed unread leaves the front end's bookkeeping at once."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from r1kit.engine import SamplingParams
from r1kit.engine.core import EngineProcess
from r1kit.engine.streaming import Stream
from r1kit.engine.types import RequestOutput, Sample


def _out(tokens: list[int]) -> RequestOutput:
    return RequestOutput([9], [Sample(token_ids=tokens)])


class Source:
    """The engine's side of one request: deltas to hand out, and whether it was aborted."""

    def __init__(self, deltas: list[tuple[object, bool]]) -> None:
        self.deltas = list(deltas)
        self.aborts = 0
        self.left = threading.Event()

    async def take(self):
        if not self.deltas:
            await asyncio.sleep(3600)  # a request still generating
        return self.deltas.pop(0)

    def abort(self) -> None:
        self.aborts += 1
        self.left.set()


def test_closed_before_the_first_read_aborts():
    src = Source([(_out([1]), False), (_out([2]), True)])
    asyncio.run(Stream(src.take, src.abort).aclose())
    assert src.aborts == 1


def test_read_to_the_end_never_aborts():
    src = Source([(_out([1]), False), (_out([2]), True)])

    async def main():
        s = Stream(src.take, src.abort)
        got = [d async for d in s]
        await s.aclose()
        return got

    got = asyncio.run(main())
    assert [d[0].samples[0].token_ids for d in got] == [[1], [2]] and src.aborts == 0


def test_a_failed_request_is_not_aborted():
    src = Source([(_out([1]), False), (ValueError("refused"), True)])

    async def main():
        s = Stream(src.take, src.abort)
        with pytest.raises(ValueError):
            async for _ in s:
                pass
        await s.aclose()

    asyncio.run(main())
    assert src.aborts == 0


def test_cancelled_while_waiting_aborts_once():
    src = Source([(_out([1]), False)])

    async def main():
        s = Stream(src.take, src.abort)

        async def read():
            async for _ in s:
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.01)  # the first delta read, now waiting for the next
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await s.aclose()

    asyncio.run(main())
    assert src.aborts == 1


def test_collected_unread_aborts():
    src = Source([(_out([1]), False)])
    s = Stream(src.take, src.abort)
    del s
    gc.collect()
    assert src.left.wait(10)  # from a thread of its own (see Stream.__del__)
    assert src.aborts == 1


def test_engine_process_request_closed_unread_is_aborted(tiny_model):
    eng = EngineProcess(tiny_model, max_waiting=4, block_size=4, max_num_seqs=4)
    try:

        async def main():
            src = eng.open([5, 6, 7], SamplingParams(max_tokens=64, temperature=1.0, seed=0))
            await src.aclose()  # the client went away before the first token

        asyncio.run(main())
        # aborted at once: the front end forgot it (an unread generator used to keep it until
        # the engine had generated all 64 tokens for nobody)
        assert not eng._subs
    finally:
        eng.close()
