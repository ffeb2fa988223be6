"""Held-out evaluation for every stage's report: pass@1 / pass@k (R1 protocol: T=0.6, top-p
0.95, k samples) plus how the reasoning reads: format rate, language consistency, the
language-mixing rate, and the malformed-output rate (wrong format or any readability filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1kit.chat import resolve_template, set_template
from r1kit.engine import SamplingParams, make_engine
from r1kit.pipeline.filters import READABILITY, Limits, failures
from r1kit.rewards.language import language_consistency
from r1kit.rl import dp


def device_of(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


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
) -> tuple[dict[str, float], list]:
    """(summary, rollouts). Same problems, seed and settings give the same samples, so stages
    are compared on equal terms. `template` auto: the model's own format."""
    limits = limits or Limits()
    template = resolve_template(tokenizer, template)
    set_template(tokenizer, template)
    eng = make_engine(model, pad_token_id=tokenizer.pad_token_id, kind=engine,
                      **({} if engine == "hf" else {"max_num_seqs": min(512, len(problems) * k)}))  # fmt: skip
    params = SamplingParams(n=k, temperature=0.6, top_p=0.95, max_tokens=max_new_tokens,
                            stop_token_ids=(tokenizer.eos_token_id,), seed=seed)  # fmt: skip
    was_training = model.training
    model.eval()
    # under torchrun each rank samples its share of the problems; all get every rollout
    summary, rollouts = dp.evaluate(eng, tokenizer, problems, template, params)
    model.train(was_training)
    n = max(1, len(rollouts))
    fails = [failures(r.text, r.example, r.finish_reason, limits) for r in rollouts]
    for name in READABILITY:
        summary[f"{name}_rate"] = sum(name in f for f in fails) / n
    summary["language_consistency"] = (
        sum(language_consistency(r.text, r.example) for r in rollouts) / n
    )
    summary["malformed_rate"] = (
        sum(bool(f) or r.rewards["format"] == 0 for f, r in zip(fails, rollouts)) / n
    )
    return summary, rollouts


def evaluate_path(path: str | None, problems: Sequence[dict], **kw: Any) -> dict[str, float]:
    """evaluate_model on a model loaded from a hub id, directory or run directory."""
    from r1kit.modeling import load_model, load_tokenizer

    device = device_of(kw.pop("device", "auto"))
    model, tok = load_model(path, device=device), load_tokenizer(path)
    return evaluate_model(model, tok, problems, **kw)[0]
