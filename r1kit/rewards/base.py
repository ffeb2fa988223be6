"""The reward signature, the registry, weighted sums and user plugins.

A reward is any callable

    reward(completion: str, example: dict) -> float

`completion` is the generated text after the prompt (for the R1-Zero template it continues after
the prompt's `<think>`); `example` is the dataset row: at least "question" and "answer", usually
"task", and "template" ("r1zero" or "chat"). Five lines of Python make a new one:

    def short_answers(completion, example):
        return 1.0 if len(completion) < 400 else 0.0

and `--reward mypkg.mymod:short_answers` (or `--reward mypkg.mymod:short_answers=0.5`) uses it.

Rewards that need an argument are made by a factory: `name@ARG` (e.g. `reward_model@runs/rm`)
calls FACTORIES[name](ARG) once. An example may say which rewards apply to it with a "rewards"
list (e.g. a prompt without a checkable answer: ["reward_model", "format"]); the others score 0
for it and are not computed, so every completion of a prompt still shares one reward scale.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from r1kit.errors import R1kitError

RewardFn = Callable[[str, Mapping[str, Any]], float]
REGISTRY: dict[str, RewardFn] = {}
FACTORIES: dict[str, Callable[[str], RewardFn]] = {}  # name@ARG -> FACTORIES[name](ARG)


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    def deco(fn: RewardFn) -> RewardFn:
        REGISTRY[name] = fn
        return fn

    return deco


def get_reward(name: str) -> RewardFn:
    """A registered reward by name, or a plugin given as `package.module:function`."""
    if name in REGISTRY:
        return REGISTRY[name]
    base, at, arg = name.partition("@")
    if at:
        if base not in FACTORIES:
            raise R1kitError(
                f"unknown reward factory {base!r} in {name!r}; known: "
                f"{', '.join(sorted(FACTORIES))}"
            )
        return FACTORIES[base](arg)
    if ":" not in name:
        raise R1kitError(
            f"unknown reward {name!r}; built-in: {', '.join(sorted(REGISTRY))}, "
            "or a plugin as package.module:function"
        )
    mod_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise R1kitError(f"cannot load reward plugin {name!r}: {err}") from None
    if not callable(fn):
        raise R1kitError(f"reward plugin {name!r} is not callable")
    return fn


def parse_reward_spec(spec: str) -> dict[str, float]:
    """'accuracy=1,format=0.5' -> {'accuracy': 1.0, 'format': 0.5} (a bare name weighs 1)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, w = part.rpartition("=") if "=" in part else (part, "", "1")
        try:
            weights[(name if eq else part).strip()] = float(w)
        except ValueError:
            raise R1kitError(f"bad reward weight in {part!r}: expected name=number") from None
    if not weights:
        raise R1kitError("no rewards given")
    return weights


class WeightedReward:
    """r = Σ_k w_k · r_k, keeping each component for the metrics."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = dict(weights)
        self.fns = {name: get_reward(name) for name in self.weights}

    def components(self, completion: str, example: Mapping[str, Any]) -> dict[str, float]:
        """Each reward's value; those the example's "rewards" list leaves out are 0."""
        applies = example.get("rewards")
        return {
            name: float(fn(completion, example)) if applies_to(name, applies) else 0.0
            for name, fn in self.fns.items()
        }

    def prepare(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> None:
        """Let rewards that work better in batches (a `prepare` method: the sandboxed code
        reward runs programs in parallel) do a whole batch before the per-completion calls."""
        for fn in self.fns.values():
            if hasattr(fn, "prepare"):
                fn.prepare(completions, examples)

    def total(self, parts: Mapping[str, float]) -> float:
        return sum(self.weights[k] * v for k, v in parts.items())

    def __call__(self, completion: str, example: Mapping[str, Any]) -> float:
        return self.total(self.components(completion, example))


def applies_to(name: str, applies: Any) -> bool:
    """Does reward `name` (maybe `factory@arg`) apply to an example whose "rewards" field is
    `applies` (None: all do)?"""
    if applies is None:
        return True
    if isinstance(applies, str):
        applies = [a.strip() for a in applies.split(",")]
    return name in applies or name.partition("@")[0] in applies
