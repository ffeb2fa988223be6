"""Held-out evaluation, the one every job reports: k samples per problem (R1 protocol: T=0.6,
top-p 0.95), pass@1, pass@k, format rate, accuracy among well-formatted answers, length,
reflection rate, and how the reasoning reads (language consistency, the readability filters'
rates, the malformed-output rate: wrong format or any readability filter).

`evaluate` runs on an engine (under torchrun each rank samples its share of the problems and
every rank gets the whole result); `evaluate_model` builds the engine for a model in memory,
`evaluate_path` loads one first. The same problems, seed and settings give the same samples, so
models and stages are compared on equal terms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from r1kit import dist
from r1kit.chat import resolve_template, set_template
from r1kit.engine import Engine, SamplingParams, make_engine
from r1kit.modeling import device_of, load_model, load_tokenizer
from r1kit.rewards.base import WeightedReward
from r1kit.rewards.language import language_consistency
from r1kit.sampling.filters import READABILITY, Limits, failures
from r1kit.sampling.metrics import summarize
from r1kit.sampling.rollout import Rollout, generate, score


def evaluate(
    engine: Engine,
    tokenizer: Any,
    problems: Sequence[dict],
    template: str,
    params: SamplingParams,
    limits: Limits | None = None,
) -> tuple[dict[str, float], list[Rollout]]:
    """(summary, scored rollouts problem by problem); under torchrun the problems are split
    over the ranks and every rank returns the whole of both."""

    def run(mine: range) -> list[Rollout]:
        plist = [per_problem(params, i) for i in mine]
        rollouts = generate(engine, tokenizer, [problems[i] for i in mine], template, plist)
        score(rollouts, WeightedReward({"accuracy": 1.0, "format": 1.0}))
        return rollouts

    rollouts = dist.map_shares(len(problems), run)
    return summarize_rollouts(rollouts, params.n, limits), rollouts


def summarize_rollouts(
    rollouts: Sequence[Rollout], k: int, limits: Limits | None = None
) -> dict[str, float]:
    """The summary of `evaluate` from its scored rollouts (k per problem, problem by problem)."""
    correct = [
        [r.rewards["accuracy"] > 0 for r in rollouts[i : i + k]] for i in range(0, len(rollouts), k)
    ]
    formatted = [r for r in rollouts if r.rewards["format"] > 0]
    n = max(1, len(rollouts))
    out = summarize(correct, k)
    out.update(
        format_rate=len(formatted) / n,
        formatted_accuracy=(
            sum(r.rewards["accuracy"] for r in formatted) / len(formatted) if formatted else 0.0
        ),
        mean_length=sum(len(r.completion_ids) for r in rollouts) / n,
        reflection_rate=sum(r.reflects for r in rollouts) / n,
        n_problems=len(rollouts) // k,
    )
    limits = limits or Limits()
    fails = [failures(r.text, r.example, r.finish_reason, limits) for r in rollouts]
    for name in READABILITY:
        out[f"{name}_rate"] = sum(name in f for f in fails) / n
    out["language_consistency"] = sum(language_consistency(r.text, r.example) for r in rollouts) / n
    out["malformed_rate"] = (
        sum(bool(f) or r.rewards["format"] == 0 for f, r in zip(fails, rollouts)) / n
    )
    return out


def problem_seed(seed: int, index: int) -> int:
    """The seed of problem `index` of an evaluation seeded with `seed` (32 bits, well mixed)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def per_problem(params: SamplingParams, index: int) -> SamplingParams:
    """`params` for problem `index`: a seeded evaluation gives each problem its own seed.

    With one seed for all, every problem's j-th sample drew the same noise at every step, so
    the samples of different problems were correlated (prompts of one template start alike and
    the first tokens then agree across problems): pass@1 kept its expectation but its spread
    over seeds was several times its reported standard error (the embedded model, 300 problems,
    k=4: 0.278 and 0.297 at seeds 1 and 2; over seeds 1-30 a mean of 0.215 with sd 0.053; with
    a seed per problem, 0.208 with sd 0.011 over seeds 1-10). Derived from (seed, index), the
    draws stay reproducible: the same problems and seed give the same samples."""
    if params.seed is None:
        return params
    return replace(params, seed=problem_seed(params.seed, index))


def eval_params(
    k: int,
    max_tokens: int,
    eos_id: int,
    seed: int = 1,
    temperature: float = 0.6,
    top_p: float = 0.95,
) -> SamplingParams:
    """The R1 protocol's sampling: k samples per problem at T=0.6, top-p 0.95, seeded
    (`evaluate` turns the seed into one per problem: `per_problem`)."""
    return SamplingParams(
        n=k,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop_token_ids=(eos_id,),
        seed=seed,
    )


def evaluate_model(
    model: Any,
    tokenizer: Any,
    problems: Sequence[dict],
    template: str = "r1zero",
    k: int = 4,
    max_new_tokens: int = 128,
    seed: int = 1,
    engine: str = "auto",
    limits: Limits | None = None,
    temperature: float = 0.6,
    top_p: float = 0.95,
) -> tuple[dict[str, float], list[Rollout]]:
    """`evaluate` with an engine made for `model`; `template` auto: the model's own format."""
    template = resolve_template(tokenizer, template)
    set_template(tokenizer, template)
    kw = {} if engine == "hf" else {"max_num_seqs": min(512, len(problems) * k)}
    eng = make_engine(model, pad_token_id=tokenizer.pad_token_id, kind=engine, **kw)
    params = eval_params(k, max_new_tokens, tokenizer.eos_token_id, seed, temperature, top_p)
    was_training = model.training
    model.eval()
    summary, rollouts = evaluate(eng, tokenizer, problems, template, params, limits)
    model.train(was_training)
    return summary, rollouts


def evaluate_path(path: str | None, problems: Sequence[dict], **kw: Any) -> dict[str, float]:
    """evaluate_model on a model loaded from a hub id, directory or run directory."""
    device = device_of(kw.pop("device", "auto"))
    model, tok = load_model(path, device=device), load_tokenizer(path)
    return evaluate_model(model, tok, problems, **kw)[0]
