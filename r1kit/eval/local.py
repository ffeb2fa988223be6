"""The local backend: a model (embedded, local directory or hub id) through `r1kit.engine`.

Prompts are rendered and tokenized here (the engine works in token ids only). With several GPUs
the work is data-parallel: one spawned process per GPU, each with its own model and engine,
pulling chunks of requests from a shared queue; on one GPU or the CPU it runs in this process.
A sample may not run past the model's context (`max_position_embeddings`): max_tokens is cut to
what is left after the prompt.
"""

from __future__ import annotations

import queue
import traceback
from collections.abc import Iterator
from pathlib import Path

from r1kit.chat import THINK_OPEN, resolve_template, set_template
from r1kit.engine import SamplingParams, make_engine
from r1kit.errors import R1kitError
from r1kit.eval.backends import Params, Request, engine_kind
from r1kit.eval.scoring import split_output
from r1kit.modeling import EMBEDDED_DIR, load_model, load_tokenizer, resolve_model
from r1kit.sampling.rollout import prompt


def default_devices() -> list[str]:
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]


def _make_engine(model, pad_id: int, kind: str):
    try:
        return make_engine(model, pad_token_id=pad_id, kind=kind)
    except ValueError as err:
        raise R1kitError(f"--engine: {err}") from None


class LocalBackend:
    kind = "local"

    def __init__(
        self,
        spec: str | None,
        engine: str = "auto",
        template: str = "auto",
        devices: list[str] | None = None,
        chunk_samples: int = 512,
    ) -> None:
        self.path = resolve_model(spec)
        self.name = "r1kit-tiny" if Path(self.path) == EMBEDDED_DIR else self.path.rstrip("/")
        self.tokenizer = load_tokenizer(spec)
        self.template = resolve_template(self.tokenizer, template)
        set_template(self.tokenizer, self.template)
        self.engine_kind = engine_kind(engine)
        self.devices = devices or default_devices()
        self.chunk_samples = chunk_samples
        from transformers import AutoConfig  # after load_tokenizer: a bad hub id fails at once

        cfg = AutoConfig.from_pretrained(self.path)
        self.context = getattr(cfg, "max_position_embeddings", None)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = getattr(cfg, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.stop_ids = tuple(sorted({i for i in [*eos, tok.eos_token_id] if i is not None}))
        self._engine = None

    def prompt(self, question: str) -> tuple[str, list[int]]:
        """The prompt as text and token ids: the chat template with R1's single user message (no
        system prompt), or the R1-Zero template for a base model."""
        return prompt(self.tokenizer, question, self.template)

    def generate(self, requests: list[Request], params: Params) -> Iterator[list[dict]]:
        chunks: list[list[tuple[Request, str, list[int], SamplingParams]]] = [[]]
        rows = 0  # samples in the last chunk
        for r in requests:
            text, ids = self.prompt(r.problem["question"])
            room = params.max_tokens if self.context is None else self.context - len(ids)
            sp = SamplingParams(
                n=r.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=max(1, min(params.max_tokens, room)),
                stop_token_ids=self.stop_ids,
                seed=r.seed,
            )
            if chunks[-1] and rows + r.n > self.chunk_samples:
                chunks.append([])
                rows = 0
            chunks[-1].append((r, text, ids, sp))
            rows += r.n
        chunks = [c for c in chunks if c]
        if len(self.devices) == 1:
            yield from self._run_here(chunks)
        else:
            yield from self._run_parallel(chunks)

    def _records(self, chunk, outs) -> list[dict]:
        recs = []
        for (r, text, ids, _), samples in zip(chunk, outs):
            in_think = text.rstrip().endswith(THINK_OPEN)
            for j, (token_ids, finish) in enumerate(samples):
                out = self.tokenizer.decode(token_ids, skip_special_tokens=True)
                reasoning, answer = split_output(out, in_think)
                recs.append(
                    {
                        "problem_id": r.problem["id"],
                        "sample": r.start + j,
                        "prompt": text,
                        "reasoning": reasoning,
                        "answer": answer,
                        "tokens": len(token_ids),
                        "prompt_tokens": len(ids),
                        "finish_reason": finish,
                    }
                )
        return recs

    def _run_here(self, chunks) -> Iterator[list[dict]]:
        if self._engine is None:
            model = load_model(self.path, device=self.devices[0]).eval()
            self._engine = _make_engine(model, self.pad_id, self.engine_kind)
        for chunk in chunks:
            outs = self._engine.generate([c[2] for c in chunk], [c[3] for c in chunk])
            yield self._records(
                chunk, [[(s.token_ids, s.finish_reason) for s in o.samples] for o in outs]
            )

    def _run_parallel(self, chunks) -> Iterator[list[dict]]:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        tasks, results = ctx.Queue(), ctx.Queue()
        args = (self.path, self.engine_kind, self.pad_id, tasks, results)
        procs = [ctx.Process(target=_worker, args=(d, *args), daemon=True) for d in self.devices]
        for p in procs:
            p.start()
        for cid, chunk in enumerate(chunks):
            tasks.put((cid, [c[2] for c in chunk], [c[3] for c in chunk]))
        for _ in procs:
            tasks.put(None)
        try:
            for _ in chunks:
                cid, outs = _next_result(results, procs)
                yield self._records(chunks[cid], outs)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()

    def close(self) -> None:
        self._engine = None


def _next_result(results, procs) -> tuple[int, list]:
    while True:
        try:
            cid, outs, err = results.get(timeout=5)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                code = dead[0].exitcode
                raise RuntimeError(f"a generation worker died (exit code {code})") from None
            continue
        if err is not None:
            raise RuntimeError(f"generation failed on {err}")
        return cid, outs


def _worker(device: str, path: str, kind: str, pad_id: int, tasks, results) -> None:
    """One data-parallel rank: its own model and engine on `device`, chunks until None."""
    try:
        import torch

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(1)
        engine = _make_engine(load_model(path, device=device).eval(), pad_id, kind)
        while (task := tasks.get()) is not None:
            cid, prompts, params = task
            outs = engine.generate(prompts, params)
            results.put(
                (cid, [[(s.token_ids, s.finish_reason) for s in o.samples] for o in outs], None)
            )
    except BaseException:
        results.put((None, None, f"{device}: {traceback.format_exc()}"))
