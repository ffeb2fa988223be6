"""Teachers for distillation: a local model through the engine, or any OpenAI-compatible
endpoint (DeepSeek's API, vLLM, `r1kit serve`) through eval.remote.RemoteBackend (retries with
backoff on 429 / 5xx / dropped connections). Both yield the eval backends' sample records
(problem_id, sample, prompt, reasoning, answer, tokens, prompt_tokens, finish_reason) in
batches as they finish, so the caller can cache them at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from r1kit.chat import resolve_template, set_template, split_reasoning
from r1kit.config import DistillConfig
from r1kit.engine import SamplingParams, make_engine
from r1kit.eval.backends import Params, Request
from r1kit.eval.remote import RemoteBackend
from r1kit.modeling import device_of, load_model, load_tokenizer, resolve_model
from r1kit.sampling.rollout import encode_prompts


class LocalTeacher:
    kind = "local"

    def __init__(
        self, spec: str | None, template: str, engine: str = "auto", device: str = "auto"
    ) -> None:
        self.name = resolve_model(spec)
        self.model = load_model(spec, device=device_of(device)).eval()
        self.tok = load_tokenizer(spec)
        self.template = resolve_template(self.tok, template)  # auto: the teacher's own format
        set_template(self.tok, self.template)
        self.engine = make_engine(
            self.model,
            pad_token_id=self.tok.pad_token_id,
            kind=engine,
            **({} if engine == "hf" else {"max_num_seqs": 256}),
        )

    def generate(self, requests: list[Request], params: Params) -> Iterator[list[dict]]:
        for i in range(0, len(requests), 64):
            chunk = requests[i : i + 64]
            prompts = encode_prompts(self.tok, [r.problem for r in chunk], self.template)
            sp = [
                SamplingParams(
                    n=r.n,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_tokens,
                    seed=r.seed,
                    stop_token_ids=(self.tok.eos_token_id,),
                )
                for r in chunk
            ]
            outs = self.engine.generate(prompts, sp)
            batch = []
            for r, p, o in zip(chunk, prompts, outs):
                for j, s in enumerate(o.samples):
                    text = self.tok.decode(s.token_ids, skip_special_tokens=True)
                    reasoning, answer = split_reasoning(text)
                    batch.append(
                        {
                            "problem_id": r.problem["id"],
                            "sample": r.start + j,
                            "prompt": r.problem["question"],
                            "reasoning": reasoning,
                            "answer": answer,
                            "tokens": len(s.token_ids),
                            "prompt_tokens": len(p),
                            "finish_reason": s.finish_reason,
                        }
                    )
            yield batch

    def close(self) -> None:
        pass


def make_teacher(cfg: DistillConfig) -> LocalTeacher | RemoteBackend:
    """The teacher of a DistillConfig: an endpoint when `teacher` is a URL, else a local model."""
    if cfg.url:
        key = cfg.endpoint.api_key or os.environ.get("OPENAI_API_KEY")
        return RemoteBackend(
            cfg.url, key, cfg.teacher_model, cfg.endpoint.concurrency, cfg.endpoint.retries
        )
    return LocalTeacher(cfg.teacher, cfg.template, cfg.run.engine, cfg.run.device)
