"""`r1kit serve model.gguf`: the same routes over llama.cpp (llama-cpp-python, optional).

The seam is `Generator`: the routes call `render`, `encode`, `params`, `start` and read `tok`,
`name`, `max_model_len`, `describe()`; `Generation` pulls (RequestOutput delta, finished) pairs
from `Generator._open`. `GGUFGenerator` keeps all of that and replaces what lies under it:
- the tokenizer is llama.cpp's own, read from the GGUF (`GGUFTokenizer`), and the prompt is the
  GGUF's chat template rendered with Jinja as `transformers` renders it; detokenizing, stop
  strings and the reasoning/answer split are r1kit's (`SampleText`, `ReasoningStream`), so a
  GGUF answers exactly like the PyTorch model it came from;
- generation is `Llama.generate` behind the interface every engine has (a `ThreadedEngine`,
  r1kit/engine/streaming.py): one request at a time on a worker thread (llama.cpp's context is
  single-sequence here); tokens stream to the event loop as they come, and leaving the stream
  (client gone, or every sample hit a stop string) stops the thread at the next token.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from r1kit.engine.streaming import ThreadedEngine
from r1kit.engine.types import RequestOutput, Sample, SamplingParams
from r1kit.errors import R1kitError
from r1kit.export.info import gguf_summary
from r1kit.export.modelfile import ollama_tag
from r1kit.serve.errors import APIError
from r1kit.serve.generation import Generator

DEFAULT_CTX = 4096  # context allocated when the model allows more (llama.cpp's KV is per token)


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise R1kitError(
            "serving a .gguf file needs llama-cpp-python: pip install 'r1kit[gguf]' "
            "(it compiles llama.cpp; or serve the HF model directory instead)"
        ) from None
    return llama_cpp


class GGUFTokenizer:
    """The slice of the `transformers` tokenizer API the server uses, over llama.cpp's vocab."""

    def __init__(self, llm: Any, chat_template: str | None) -> None:
        self.llm = llm
        self.chat_template = chat_template
        self.bos_token_id = _opt_id(llm.token_bos())
        self.eos_token_id = _opt_id(llm.token_eos())
        self.pad_token_id = self.eos_token_id
        self.bos_token = self._text(self.bos_token_id)
        self.eos_token = self._text(self.eos_token_id)
        self._template = None

    def _text(self, tid: int | None) -> str:
        if tid is None:
            return ""
        return self.llm.detokenize([tid], special=True).decode("utf-8", errors="replace")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Special-token text (`<｜User｜>`, `<think>`) becomes its id, as in `transformers`."""
        return list(
            self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)
        )

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(
        self,
        ids: list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        """Control tokens are dropped when skipping special tokens; user-defined ones such as
        `<think>` are always text (llama.cpp's CONTROL vs USER_DEFINED = HF's special flag)."""
        data = self.llm.detokenize(list(ids), special=not skip_special_tokens)
        return data.decode("utf-8", errors="replace")

    def apply_chat_template(
        self,
        messages: list[dict],
        tokenize: bool = False,
        add_generation_prompt: bool = True,
        **kw: Any,
    ) -> Any:
        if not self.chat_template:
            raise APIError(400, "this GGUF has no chat template; use /v1/completions")
        if self._template is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            # the environment `transformers` renders chat templates in
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
            )
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(self.chat_template)
        text = self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            **kw,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _raise(msg: str) -> None:
    raise APIError(400, f"chat template: {msg}")


def _opt_id(tid: int) -> int | None:
    return tid if tid is not None and tid >= 0 else None


class GGUFGenerator(Generator):
    """A `Generator` whose model is a GGUF file run by llama.cpp: its tokenizer is llama.cpp's
    and its engine a `ThreadedEngine` over `Llama.generate`."""

    def __init__(
        self,
        path: str,
        name: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        max_waiting: int | None = 64,
    ) -> None:
        if not Path(path).is_file():
            raise R1kitError(f"GGUF file not found: {path}")
        llama_cpp = _llama_cpp()
        self.path = path
        try:
            self.meta = gguf_summary(path)
        except (ValueError, KeyError, OSError) as e:  # gguf's reader: empty file, bad magic...
            raise R1kitError(f"not a readable GGUF file: {path} ({e})") from None
        train_ctx = self.meta["context_length"] or DEFAULT_CTX
        ctx = n_ctx or min(train_ctx, DEFAULT_CTX)
        # llama.cpp's default thread count (half the logical cores) for decode *and* prompt
        # batches: llama-cpp-python's batch default (all cores) stalls a prompt for ~0.8 s on a
        # busy 2-core machine, as OpenMP threads wait on a descheduled peer
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.llm = llama_cpp.Llama(
            model_path=path, n_ctx=ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        tok = GGUFTokenizer(self.llm, self.meta.get("chat_template"))
        backend = ThreadedEngine(
            self._run,
            "llama.cpp",
            self.llm.n_ctx(),
            64,
            max_waiting,
            on_close=getattr(self.llm, "close", None),
        )
        # the name `r1kit export ollama` gives the model, so one model has one id everywhere
        self.name = name or ollama_tag(self.meta["name"] or Path(path).stem)
        super().__init__(None, tok, self.name, max_waiting=max_waiting, backend=backend)

    def _run(
        self, prompt_ids: list[int], params: SamplingParams, stop: threading.Event, put
    ) -> None:
        """Sample params.n completions one after another; one delta per token (the
        ThreadedEngine runs one request at a time and turns an exception into a failure)."""
        n, plen = params.n, len(prompt_ids)
        reasons = ["length"] * n

        def delta(j: int, ids: list[int], reason: str) -> RequestOutput:
            samples = [Sample([], None, "length", plen) for _ in range(n)]
            samples[j] = Sample(ids, None, reason, plen)
            return RequestOutput(prompt_ids, samples)

        for j in range(n):
            if params.seed is not None:
                self.llm.set_seed(params.seed + j)
            count = 0
            for tid in self.llm.generate(
                prompt_ids,
                temp=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                min_p=params.min_p,
                repeat_penalty=1.0,
                reset=True,
            ):
                if stop.is_set():
                    return
                count += 1
                if tid in params.stop_token_ids:
                    reasons[j] = "stop"
                put((delta(j, [tid], reasons[j]), False))
                if reasons[j] == "stop" or count >= params.max_tokens:
                    break
        final = RequestOutput(prompt_ids, [Sample([], None, r, plen) for r in reasons])
        put((final, True))

    def describe(self) -> dict:
        m = self.meta
        ftype = {0: "F32", 1: "F16", 2: "Q4_0", 7: "Q8_0", 32: "BF16"}.get(m["file_type"], "?")
        info = {
            f"{m['arch']}.{k}": m[k]
            for k in (
                "context_length",
                "layers",
                "hidden",
                "heads",
                "kv_heads",
                "head_dim",
                "vocab",
            )
        }
        return {
            "family": m["arch"],
            "format": "gguf",
            "parameters": sum(_numel(s) for _, s, _ in m["tensors"]),
            "size": Path(self.path).stat().st_size,
            "quantization_level": ftype,
            "model_info": info,
        }


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
