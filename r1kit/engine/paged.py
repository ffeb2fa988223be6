"""The r1kit engine: continuous batching over a paged KV cache with the native decoder.

    engine = PagedEngine(model)                       # shares the model's weights
    outs = engine.generate(prompt_ids, SamplingParams(n=8, max_tokens=512, logprobs=True))
    engine.sleep(); ...train...; engine.wake()        # give the KV memory back meanwhile

Prefix caching is on by default (blocks.py): full prompt blocks computed for one request are
kept after it ends and reused by later requests with the same prefix (multi-turn histories,
shared system prompts, RL groups); `outs[i].num_cached_tokens` says how many prompt tokens hit.
`sync_weights` and `sleep` empty it. `prefix_cache=False` turns it off.

`add_request` / `step` / `abort` are the incremental interface the async server loop drives
(async_engine.py); `generate` is the batch call used by rollouts and evaluation.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from r1kit.engine.blocks import BlockAllocator
from r1kit.engine.model import NativeDecoder
from r1kit.engine.runner import ModelRunner
from r1kit.engine.sampler import SamplingRows, sample
from r1kit.engine.scheduler import Scheduler
from r1kit.engine.sequence import Request
from r1kit.engine.types import RequestOutput, Sample, SamplingParams, params_per_prompt

CPU_KV_BYTES = 256 << 20  # default KV budget off-GPU


class PagedEngine:
    def __init__(
        self,
        model,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        max_num_seqs: int = 512,
        max_model_len: int | None = None,
        block_size: int = 32,
        kv_memory: float | int = 0.5,  # <= 1: share of free GPU memory; else bytes
        max_prefill_tokens: int = 16384,
        cuda_graphs: bool = True,
        seed: int | None = None,
        prefix_cache: bool = True,
    ) -> None:
        p = next(model.parameters())
        device = torch.device(device) if device is not None else p.device
        dtype = dtype or p.dtype
        cfg_len = getattr(model.config, "max_position_embeddings", 4096)
        self.max_model_len = max_model_len or min(cfg_len, 40960)
        self.max_num_seqs = max_num_seqs
        self.model = NativeDecoder(model, dtype, device, self.max_model_len)
        self.block_size = block_size
        num_blocks = self._num_blocks(kv_memory, max_num_seqs, device)
        self.alloc = BlockAllocator(num_blocks, prefix_cache)
        self.scheduler = Scheduler(self.alloc, block_size, max_num_seqs, max_prefill_tokens)
        self.runner = ModelRunner(
            self.model, num_blocks, block_size, max_num_seqs, self.max_model_len, cuda_graphs
        )
        self.requests: dict[str, Request] = {}
        # unseeded requests draw their seed here; without an engine seed, from Python's global
        # RNG, so a job that seeds (and checkpoints) `random` replays the same samples on resume
        self._rng = random.Random(seed) if seed is not None else random
        self._ids = itertools.count()
        self.asleep = False
        self._weights_seen = self._weights_version()
        self._rows: tuple | None = None  # (decode batch, its SamplingRows)
        self._pending: _Launched | None = None  # the decode step launched but not yet read
        self._flip = 0
        if self.device.type == "cuda":
            # flat: the [2, B] view of its head is contiguous, so the copy into it is one
            # asynchronous DMA (a strided view of a [2, max_num_seqs] buffer makes torch
            # copy synchronously, and the host would wait for the step it just launched)
            self._host = [
                torch.empty(2 * max_num_seqs, dtype=torch.float64, pin_memory=True)
                for _ in range(2)
            ]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _num_blocks(self, kv_memory: float | int, max_num_seqs: int, device) -> int:
        m = self.model
        per_block = 2 * m.num_layers * self.block_size * m.num_kv_heads * m.head_dim
        per_block *= torch.empty(0, dtype=m.dtype).element_size()
        if kv_memory > 1:
            budget = int(kv_memory)
        elif device.type == "cuda":
            budget = int(torch.cuda.mem_get_info(device)[0] * kv_memory)
        else:
            budget = CPU_KV_BYTES
        most = max_num_seqs * -(-self.max_model_len // self.block_size) + 1
        return max(2, min(budget // per_block, most))

    # ----------------------------------------------------------------- requests
    def add_request(
        self, prompt_ids: Seq[int], params: SamplingParams, request_id: str | None = None
    ) -> str:
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(prompt)} tokens does not fit max_model_len={self.max_model_len}"
            )
        if min(prompt) < 0 or max(prompt) >= self.model.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.model.vocab_size})")
        if params.n > self.max_num_seqs:
            raise ValueError(f"n={params.n} exceeds max_num_seqs={self.max_num_seqs}")
        if self.asleep:
            raise RuntimeError("the engine is asleep; call wake() first")
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self.requests:
            raise ValueError(f"request id {rid!r} is already in flight")
        seed = params.seed if params.seed is not None else self._rng.getrandbits(32)
        req = Request(rid, prompt, params, seed)
        self.requests[rid] = req
        self.scheduler.add(list(req.seqs))
        return rid

    def abort(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is not None:
            self.scheduler.abort(req.seqs)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or self._pending is not None

    def step(self) -> list[Request]:
        """One step; returns the requests that got tokens (finished ones leave `requests`).

        Decode is pipelined one step deep: while the batch is unchanged and nothing waits to
        be admitted, step t+1 is launched (its input tokens taken from step t's sampler output
        on the device) before step t's tokens are read back, so the host's bookkeeping runs
        while the GPU computes. A sequence that emits a stop token at step t has had one more
        token computed at t+1; that token is dropped."""
        if self._pending is not None:
            nxt = None
            if not self.scheduler.waiting or not self.scheduler.can_admit():
                nxt = self._launch_decode(self._pending)
            touched = self._consume(self._pending)
            self._pending = nxt
            return touched
        if self.scheduler.waiting and self.alloc.num_cached:
            self._check_weights()
        plan = self.scheduler.schedule()
        if not plan.prefill:
            self._pending = self._launch_decode(None, plan.decode)
            return []
        try:
            logits = self.runner.prefill([g[0] for g in plan.prefill])
            self.runner.copy_blocks(plan.copies)
        except BaseException:  # the placed prompt blocks are registered but not computed
            self.alloc.clear()
            raise
        if any(len(g) > 1 for g in plan.prefill):  # one logits row per sample
            fan = [i for i, g in enumerate(plan.prefill) for _ in g]
            logits = logits[torch.tensor(fan, device=logits.device)]
        seqs = [s for g in plan.prefill for s in g]
        return self._consume(self._sample(seqs, logits, decode=False))

    def _launch_decode(self, prev: _Launched | None, seqs: list | None = None):
        """Run one decode step for `seqs` (or, pipelined, for the sequences of `prev` that go
        on) up to sampling, without waiting for the result."""
        ids = None
        if prev is not None:
            seqs = self.scheduler.grow([s for s in prev.seqs if self._continues(s)])
            if not seqs:
                return None
            if len(seqs) == len(prev.seqs) and all(map(_same, seqs, prev.seqs)):
                ids = prev.tok  # the usual case: the same batch, no gather (no upload)
            else:
                row = {id(s): i for i, s in enumerate(prev.seqs)}
                idx = torch.tensor([row[id(s)] for s in seqs]).to(
                    prev.tok.device, non_blocking=True
                )
                ids = prev.tok.index_select(0, idx)
        logits = self.runner.decode(seqs, ids)
        for s in seqs:
            s.num_cached += 1
        return self._sample(seqs, logits, decode=True)

    def _continues(self, s) -> bool:
        """Still running after its pending token, as far as the host knows without reading it."""
        if s.finish_reason is not None or not s.blocks:
            return False
        n = len(s.tokens) + s.npending
        return n - s.prompt_len < s.params.max_tokens and n < self.max_model_len

    def _sample(self, seqs, logits, decode: bool) -> _Launched:
        rows = self._sampling_rows(seqs, decode=decode, device=logits.device)
        tok, lp = sample(logits, rows)
        for s in seqs:
            s.npending += 1
        both = torch.stack([tok.double(), lp.double()])
        event = None
        if both.is_cuda:  # read back through pinned memory, double-buffered, waited on later
            self._flip ^= 1
            host = self._host[self._flip][: 2 * len(seqs)].view(2, len(seqs))
            host.copy_(both, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            both = host
        return _Launched(seqs, tok, both, event)

    def _consume(self, done: _Launched) -> list[Request]:
        if done.event is not None:
            done.event.synchronize()
        toks, lps = done.host.tolist()
        touched: dict[str, Request] = {}
        for s, t, x in zip(done.seqs, toks, lps):
            s.npending -= 1
            if s.finish_reason is not None:  # aborted, or a token past a stop: dropped
                continue
            t = int(t)
            s.tokens.append(t)
            if s.logprobs is not None:
                s.logprobs.append(x)
            p, n = s.params, len(s.tokens)
            if t in p.stop_token_ids:
                self.scheduler.finish(s, "stop")
            elif n - s.prompt_len >= p.max_tokens or n >= self.max_model_len:
                self.scheduler.finish(s, "length")
            touched[s.request.request_id] = s.request
        self.scheduler.reap()
        for rid, req in touched.items():
            if req.finished:
                self.requests.pop(rid, None)
        return list(touched.values())

    def _sampling_rows(self, seqs, decode: bool, device) -> SamplingRows:
        """Per-row sampling tensors; reused (steps + 1) while the decode batch is unchanged."""
        last = self._rows
        if decode and last and len(last[0]) == len(seqs) and all(map(_same, last[0], seqs)):
            last[1].steps += 1
            return last[1]
        rows = SamplingRows.build(
            [s.params for s in seqs],
            [s.seed for s in seqs],
            [s.num_output + s.npending for s in seqs],
            device,
        )
        self._rows = (list(seqs), rows) if decode else None
        return rows

    # ----------------------------------------------------------------- batch call
    def generate(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams | Seq[SamplingParams],
    ) -> list[RequestOutput]:
        plist = params_per_prompt(prompts, params)
        reqs = []
        try:
            for p, sp in zip(prompts, plist):
                reqs.append(self.requests[self.add_request(p, sp)])
            while any(not r.finished for r in reqs):
                self.step()
            self.flush()
        except BaseException:
            for r in reqs:
                self.abort(r.request_id)
            raise
        return [output_of(r) for r in reqs]

    def flush(self) -> None:
        """Read back the step in flight, if any (its tokens all belong to finished requests
        when called after they finished)."""
        if self._pending is not None:
            done, self._pending = self._pending, None
            self._consume(done)

    def warm_up(self) -> None:
        """Capture every CUDA graph and run each prefill path once (a long prompt, and the same
        prompt again after its cached prefix), so that a server's first requests do not pay for
        graph capture and kernel compilation. The prefix cache is emptied after."""
        self.runner.capture_all()
        prompt = [1 + i % 7 for i in range(min(1024, self.max_model_len // 2))]
        greedy = SamplingParams(max_tokens=2, temperature=0.0)
        for prompts in ([prompt[:16]], [prompt], [prompt, prompt[:-5] + [2, 3]]):
            self.generate(prompts, greedy)
        # and the sampler's filters (their Triton kernels compile on first use)
        self.generate([prompt[:16]], SamplingParams(max_tokens=2, top_p=0.95, top_k=50))
        self.alloc.clear()

    # ----------------------------------------------------------------- weights and memory
    def sync_weights(self, model=None) -> int:
        """Make the engine see the trainer's current weights (in place; shared tensors need no
        copy). Pass a different model object to re-bind. Returns tensors copied. The prefix
        cache is emptied: its K/V were computed with the old weights."""
        self.alloc.clear()
        n = self.model.sync(model)
        self._weights_seen = self._weights_version()
        return n

    def _weights_version(self) -> int:
        """Sum of the source weights' in-place version counters: an optimizer step on tensors
        the engine shares changes it without any call to `sync_weights`."""
        try:
            return sum(p._version for p in self.model.source.parameters())
        except RuntimeError:  # inference tensors keep no version counter (and cannot change)
            return 0

    def _check_weights(self) -> None:
        v = self._weights_version()
        if v != self._weights_seen:  # cached K/V belong to the old weights
            self.alloc.clear()
            self._weights_seen = v

    def sleep(self) -> None:
        """Free the KV cache and CUDA graphs (for the update phase); `wake()` takes them back."""
        if self.has_work:
            raise RuntimeError("cannot sleep with requests in flight")
        self.alloc.clear()  # the cached K/V go with the memory
        self.runner.release()
        self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.runner.allocate()
            self.asleep = False


@dataclass
class _Launched:
    """A step whose sampled tokens may still be on their way to the host."""

    seqs: list
    tok: torch.Tensor  # [B] on the device
    host: torch.Tensor  # [2, B] tokens and log-probs (pinned host memory on CUDA)
    event: torch.cuda.Event | None


def _same(a, b) -> bool:
    return a is b


def output_of(req: Request) -> RequestOutput:
    return RequestOutput(
        list(req.prompt_ids),
        [
            Sample(s.output, s.logprobs, s.finish_reason or "length", req.prompt_len)
            for s in req.seqs
        ],
        req.num_cached_tokens or 0,
    )
