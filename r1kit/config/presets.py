"""Named settings of ZeroConfig: algorithm recipes (--recipe) and run-size presets (--preset).
Both set flat fields; flags given explicitly on the command line still win."""

from __future__ import annotations

from typing import Any

from r1kit.config.jobs import ZeroConfig
from r1kit.errors import R1kitError

# Named algorithm recipes: each sets only the fields that define it (DESIGN.md section 4).
RECIPES: dict[str, dict[str, Any]] = {
    # the original GRPO (DeepSeekMath): per-sequence mean, group-scaled advantages, KL 0.04
    "grpo": dict(loss_agg="sequence", scale_rewards="group", beta=0.04, eps_low=0.2,
                 eps_high=0.2, dynamic_sampling=False, mask_truncated=False, overlong_buffer=0),
    # DAPO (Yu et al. 2025): token-level loss, clip-higher, dynamic sampling, soft overlong
    # punishment over the last fifth of the length budget (-1), no KL
    "dapo": dict(loss_agg="token", scale_rewards="group", beta=0.0, eps_low=0.2, eps_high=0.28,
                 dynamic_sampling=True, mask_truncated=False, overlong_buffer=-1),
    # Dr. GRPO (Liu et al. 2025): no length or std normalisation, no KL
    "dr_grpo": dict(loss_agg="constant", scale_rewards="none", beta=0.0, eps_low=0.2,
                    eps_high=0.2, dynamic_sampling=False, mask_truncated=False, overlong_buffer=0),
}  # fmt: skip


# Run-size presets (ZERO_PRESETS[name]); a preset with a "pretrain" entry builds that base
# with `r1kit pretrain --preset ...` first when --model is not given.
ZERO_PRESETS: dict[str, dict[str, Any]] = {
    "gpu-small": dict(
        pretrain="gpu-small",
        prompts_per_step=64,
        group_size=8,
        steps=60,
        max_tokens=256,
        lr=5e-5,
        micro_batch=128,
        pack_tokens=8192,
        eval_problems=500,
        eval_k=4,
        save_every=20,
        device="cuda",
        dtype="float32",
    ),
}
# code reasoning: write f(xs) from a description, the reward runs hidden tests in the sandbox
ZERO_PRESETS["gpu-code"] = dict(
    ZERO_PRESETS["gpu-small"],
    pretrain="gpu-code",
    dataset="code",
    rewards="code=1,format=0.5",
    steps=40,
    max_tokens=160,
    eval_problems=200,
)


def apply_preset(cfg: ZeroConfig, name: str, explicit: set[str]) -> str | None:
    """Set the preset's fields on cfg except explicit ones (flat names); returns the pretrain
    preset whose base model the run needs (None when --model was given or it needs none)."""
    if name == "none":
        return None
    if name not in ZERO_PRESETS:
        raise R1kitError(f"unknown preset {name!r}; available: {', '.join(ZERO_PRESETS)}, none")
    fields_ = dict(ZERO_PRESETS[name])
    base = fields_.pop("pretrain", None)
    for k, v in fields_.items():
        if k not in explicit:
            cfg.set(k, v)
    cfg.preset = name
    return base if cfg.model is None else None


def apply_recipe(cfg: ZeroConfig, name: str, explicit: set[str]) -> ZeroConfig:
    """Set the recipe's fields on cfg, except those in `explicit` (flat names given as flags)."""
    if name not in RECIPES and name != "custom":
        raise R1kitError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}, custom")
    for k, v in RECIPES.get(name, {}).items():
        if k not in explicit:
            cfg.set(k, v)
    if cfg.algo.overlong_buffer < 0:  # derived: the last fifth of the completion budget
        cfg.algo.overlong_buffer = max(1, cfg.sampling.max_tokens // 5)
    cfg.recipe = name
    return cfg
