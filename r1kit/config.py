"""One typed, flat config per job. CLI flags and YAML recipes map onto these fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from r1kit.errors import R1kitError

# Named algorithm recipes: each sets only the fields that define it (DESIGN.md section 4);
# flags given explicitly on the command line still win.
RECIPES: dict[str, dict[str, Any]] = {
    # the original GRPO (DeepSeekMath): per-sequence mean, group-scaled advantages, KL 0.04
    "grpo": dict(loss_agg="sequence", scale_rewards="group", beta=0.04, eps_low=0.2,
                 eps_high=0.2, dynamic_sampling=False, mask_truncated=False, overlong_buffer=0),
    # DAPO (Yu et al. 2025): token-level loss, clip-higher, dynamic sampling, soft overlong
    # punishment over the last fifth of the length budget, no KL
    "dapo": dict(loss_agg="token", scale_rewards="group", beta=0.0, eps_low=0.2, eps_high=0.28,
                 dynamic_sampling=True, mask_truncated=False, overlong_buffer=-1),
    # Dr. GRPO (Liu et al. 2025): no length or std normalisation, no KL
    "dr_grpo": dict(loss_agg="constant", scale_rewards="none", beta=0.0, eps_low=0.2,
                    eps_high=0.2, dynamic_sampling=False, mask_truncated=False, overlong_buffer=0),
}  # fmt: skip


# Run-size presets (ZERO_PRESETS[name]); a preset with a "pretrain" entry builds that base
# with `r1kit pretrain --preset ...` first when --model is not given.
ZERO_PRESETS: dict[str, dict[str, Any]] = {
    "gpu-small": dict(pretrain="gpu-small", prompts_per_step=64, group_size=8, steps=60,
                      max_new_tokens=256, lr=5e-5, micro_batch=128, pack_tokens=8192,
                      eval_problems=500, eval_k=4, save_every=20, device="cuda", dtype="float32"),
}  # fmt: skip


def apply_preset(cfg: ZeroConfig, name: str, explicit: set[str]) -> str | None:
    """Set the preset's fields on cfg except explicit ones; returns the pretrain preset whose
    base model the run needs (None when --model was given or the preset needs none)."""
    if name == "none":
        return None
    if name not in ZERO_PRESETS:
        raise R1kitError(f"unknown preset {name!r}; available: {', '.join(ZERO_PRESETS)}, none")
    fields_ = dict(ZERO_PRESETS[name])
    base = fields_.pop("pretrain", None)
    for k, v in fields_.items():
        if k not in explicit:
            setattr(cfg, k, v)
    cfg.preset = name
    return base if cfg.model is None else None


def apply_recipe(cfg: ZeroConfig, name: str, explicit: set[str]) -> ZeroConfig:
    """Set the recipe's fields on cfg, except those in `explicit` (given as flags)."""
    if name not in RECIPES and name != "custom":
        raise R1kitError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}, custom")
    for k, v in RECIPES.get(name, {}).items():
        if k not in explicit:
            setattr(cfg, k, v)
    if cfg.overlong_buffer < 0:  # derived: the last fifth of the completion budget
        cfg.overlong_buffer = max(1, cfg.max_new_tokens // 5)
    cfg.recipe = name
    return cfg


@dataclass
class ZeroConfig:
    """R1-Zero: GRPO from a base model with rule-checked rewards (DESIGN.md section 4)."""

    model: str | None = None  # hub id, local dir, or None for the embedded default
    dataset: str = "mix"  # task name(s) joined by '+', 'mix', or a .jsonl file
    eval_data: str | None = None  # optional held-out .jsonl (else the dataset's test split)
    template: str = "r1zero"
    rewards: str = "accuracy=1,format=0.5"
    out: str = "runs/zero"
    seed: int = 0
    # GRPO
    steps: int = 70
    prompts_per_step: int = 16
    group_size: int = 8  # G completions per prompt
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.0  # KL weight to a frozen reference; 0 loads no reference model
    eps_low: float = 0.2
    eps_high: float = 0.2
    scale_rewards: str = "group"  # group | batch | none
    loss_agg: str = "token"  # sequence | token | constant
    mu: int = 1  # updates per generation batch
    micro_batch: int = 64  # sequences per forward/backward
    pack_tokens: int = 0  # > 0: padding-free rows of up to this many tokens in the update
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank (peft) instead of all weights
    lora_alpha: float = 0.0  # 0 means 2 * rank
    lora_targets: str = "all-linear"  # or module names joined by ',' (q_proj,v_proj)
    mask_truncated: bool = False  # overlong filtering (DAPO)
    overlong_buffer: int = 0  # soft overlong punishment over the last N tokens (DAPO); 0 = off
    dynamic_sampling: bool = False  # drop all-equal-reward groups and refill the batch (DAPO)
    max_refills: int = 4  # generation rounds per step spent refilling, at most
    tis_cap: float = 0.0  # truncated importance weight min(pi_old / pi_engine, C); 0 = off
    recipe: str = "custom"  # grpo | dapo | dr_grpo set the fields below them in RECIPES
    preset: str = "none"  # gpu-small: pretrain a ~25M base on the GPU, then R1-Zero at scale
    # sampling during training
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    # held-out evaluation before and after (R1 protocol: T=0.6, top-p 0.95, k samples)
    eval_problems: int = 100
    eval_k: int = 4
    eval_temperature: float = 0.6
    eval_top_p: float = 0.95
    save_every: int = 10
    device: str = "auto"
    dtype: str = "auto"  # auto (float32 on CPU, bfloat16 on GPU) | float32 | bfloat16
    engine: str = "auto"  # auto (paged where supported) | paged | hf (plain transformers)

    def validate(self) -> None:
        for name in (
            "steps",
            "prompts_per_step",
            "group_size",
            "micro_batch",
            "max_new_tokens",
            "eval_k",
            "mu",
            "save_every",
            "eval_problems",
        ):
            if getattr(self, name) < 1:
                raise R1kitError(f"--{name.replace('_', '-')} must be >= 1")
        if self.group_size < 2:
            raise R1kitError("--group-size must be >= 2 (advantages compare samples of a group)")
        if self.beta < 0:
            raise R1kitError("--beta must be >= 0")
        if self.lr <= 0:
            raise R1kitError("--lr must be > 0")
        if self.temperature <= 0:
            raise R1kitError("--temperature must be > 0 (GRPO compares sampled completions)")
        if self.eval_temperature < 0:
            raise R1kitError("--eval-temperature must be >= 0 (0 is greedy)")
        for name in ("top_p", "eval_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise R1kitError(f"--{name.replace('_', '-')} must be > 0 and <= 1")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise R1kitError("--scale-rewards must be group, batch or none")
        if self.loss_agg not in ("sequence", "token", "constant"):
            raise R1kitError("--loss-agg must be sequence, token or constant")
        if not 0 <= self.overlong_buffer <= self.max_new_tokens:
            raise R1kitError("--overlong-buffer must be between 0 and --max-new-tokens")
        if self.lora_rank < 0 or self.lora_alpha < 0:
            raise R1kitError("--lora-rank and --lora-alpha must be >= 0")
        if self.pack_tokens < 0:
            raise R1kitError("--pack-tokens must be >= 0 (0 pads instead of packing)")
        if self.tis_cap < 0:
            raise R1kitError("--tis-cap must be >= 0 (0 turns it off)")
        if self.max_refills < 0:
            raise R1kitError("--max-refills must be >= 0")
        if self.engine not in ("auto", "paged", "hf"):
            raise R1kitError("--engine must be auto, paged or hf")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise R1kitError("--dtype must be auto, float32 or bfloat16")
        if self.template not in ("r1zero", "chat"):
            raise R1kitError("--template must be r1zero or chat")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZeroConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise R1kitError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class EvalConfig:
    """R1-style evaluation (DESIGN.md sections 3 and 6): k samples per problem at T=0.6,
    top-p 0.95, no system prompt, the step-by-step instruction; pass@1, pass@k, cons@k."""

    target: str | None = None  # model (hub id, local dir; None: embedded) or an endpoint URL
    benchmark: str | None = None  # math500 | aime24 | aime25 | amc23 | gsm8k
    data: str | None = None  # a local .jsonl instead of (or holding a copy of) the benchmark
    question_field: str | None = None
    answer_field: str | None = None
    solution_field: str | None = None
    k: int | None = None  # samples per problem; None: the benchmark's (64 AIME, 16 MATH-500)
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    limit: int | None = None  # the first N problems only
    out: str | None = None  # default runs/eval/<benchmark> (runs/eval/<benchmark>-gold)
    base_url: str | None = None  # an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1
    api_key: str | None = None  # else $OPENAI_API_KEY; never written to disk
    model: str | None = None  # the endpoint's model name (default: the first it lists)
    concurrency: int = 16  # requests in flight to an endpoint
    retries: int = 5  # per request, on 429 / 5xx / connection errors, with backoff
    gold: bool = False  # score the reference solutions/answers instead of a model
    engine: str = "auto"  # local engine kind, passed to r1kit.engine.make_engine
    template: str = "auto"  # auto (chat if the tokenizer has a template) | chat | r1zero
    seed: int | None = None  # local default 0; sent to an endpoint only when given
    grade_timeout: float = 5.0  # seconds per answer for math-verify

    def validate(self) -> None:
        for name in ("k", "max_tokens", "limit", "concurrency"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise R1kitError(f"--{name.replace('_', '-')} must be >= 1")
        if self.retries < 0:
            raise R1kitError("--retries must be >= 0")
        if self.temperature < 0:
            raise R1kitError("--temperature must be >= 0 (0 is greedy)")
        if not 0 < self.top_p <= 1:
            raise R1kitError("--top-p must be > 0 and <= 1")
        if self.grade_timeout <= 0:
            raise R1kitError("--grade-timeout must be > 0")
        if self.template not in ("auto", "chat", "r1zero"):
            raise R1kitError("--template must be auto, chat or r1zero")

    @property
    def url(self) -> str | None:
        """The endpoint, when this evaluates one: --base-url, or a URL given as the target."""
        if self.base_url:
            return self.base_url
        t = self.target or ""
        return t if t.startswith(("http://", "https://")) else None
