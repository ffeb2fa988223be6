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
# code reasoning: write f(xs) from a description, the reward runs hidden tests in the sandbox
ZERO_PRESETS["gpu-code"] = dict(
    ZERO_PRESETS["gpu-small"],
    pretrain="gpu-code",
    dataset="code",
    rewards="code=1,format=0.5",
    steps=40,
    max_new_tokens=160,
    eval_problems=200,
)


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
    grad_checkpoint: bool = False  # recompute decoder activations in backward: less memory
    compile_update: bool = False  # torch.compile decoder layers + LM-head chunks (GPU)
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
    time_limit_s: float = 0.0  # > 0: stop training after this many seconds (then evaluate)
    unsafe_exec: bool = False  # run model-written code without a sandbox when none works here

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
    template: str = "auto"  # auto (the model's own format, from its tokenizer) | chat | r1zero
    seed: int | None = None  # local default 0; sent to an endpoint only when given
    grade_timeout: float = 5.0  # seconds per answer for math-verify
    tests_field: str | None = None  # --data: the tests of a programming problem (code benchmark)
    entry_point_field: str | None = None  # --data: the function the tests call
    unsafe_exec: bool = False  # run model-written code without a sandbox when none works here

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


def _check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise R1kitError(f"--{name.replace('_', '-')} must be >= 1")


@dataclass
class SFTConfig:
    """Supervised fine-tuning: loss on assistant tokens only, packed rows, warmup + cosine."""

    model: str | None = None  # hub id, local dir, run dir, or None for the embedded default
    data: str = "traces:mix"  # chat .jsonl | hub dataset id | traces:TASKS (worked traces)
    split: str = "train"  # the hub dataset's split
    template: str = "r1zero"  # r1zero | chat: how a conversation becomes tokens
    max_examples: int = 0  # 0: all rows (traces: 2000)
    out: str = "runs/sft"
    seed: int = 0
    epochs: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the cosine ends at lr * this
    warmup_ratio: float = 0.05  # share of the steps spent warming up linearly
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 32  # sequences per optimizer step
    micro_batch: int = 32  # sequences per forward/backward
    pack_tokens: int = 512  # > 0: padding-free rows of up to this many tokens; 0 pads
    max_len: int = 1024  # longer sequences are dropped (and counted)
    save_every: int = 50
    eval_dataset: str | None = None  # task spec or .jsonl; default: the traces' tasks
    eval_problems: int = 100  # 0: no held-out evaluation
    eval_k: int = 4
    max_new_tokens: int = 128
    device: str = "auto"
    engine: str = "auto"

    def validate(self) -> None:
        _check_positive(self, ("epochs", "batch_size", "micro_batch", "max_len", "save_every",
                               "eval_k", "max_new_tokens"))  # fmt: skip
        if self.lr <= 0:
            raise R1kitError("--lr must be > 0")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise R1kitError("--warmup-ratio must be in [0, 1) and --min-lr-ratio in [0, 1]")
        if self.template not in ("r1zero", "chat"):
            raise R1kitError("--template must be r1zero or chat")
        if min(self.pack_tokens, self.max_examples, self.eval_problems) < 0:
            raise R1kitError("--pack-tokens, --max-examples and --eval-problems must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SampleConfig:
    """Rejection sampling: k completions per prompt, keep the verified-correct, readable ones."""

    model: str | None = None
    dataset: str = "mix"  # task spec or .jsonl with question + answer (train split is used)
    prompts: int = 500
    k: int = 4
    template: str = "auto"  # auto (the model's own format) | r1zero | chat
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 128
    keep_per_prompt: int = 2  # at most this many distinct kept completions per prompt
    language: str = "en"  # target language of the reasoning
    min_language: float = 0.95  # language-consistency share below which a sample is mixed
    max_repeats: int = 3  # a word 4-gram seen more often than this is repetition
    max_paragraph_words: int = 200
    max_code_lines: int = 30
    unsafe_exec: bool = False  # run model-written code (code problems) without a sandbox
    out: str = "runs/sample"
    seed: int = 0
    device: str = "auto"
    engine: str = "auto"

    def validate(self) -> None:
        _check_positive(self, ("prompts", "k", "max_new_tokens", "keep_per_prompt",
                               "max_repeats", "max_paragraph_words", "max_code_lines"))  # fmt: skip
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise R1kitError("--temperature must be >= 0 and --top-p in (0, 1]")
        if not 0 <= self.min_language <= 1:
            raise R1kitError("--min-language must be in [0, 1]")


@dataclass
class DistillConfig:
    """Distillation: a teacher answers prompts with reasoning; verified, readable answers become
    SFT data for a (smaller) student."""

    teacher: str | None = None  # local model/run dir, or an OpenAI-compatible URL (.../v1)
    teacher_model: str | None = None  # the endpoint's model name (default: the first listed)
    api_key: str | None = None  # else $OPENAI_API_KEY; never written to disk
    student: str | None = None  # the student's starting model (default: the embedded one)
    student_layers: str = ""  # e.g. '0,3': keep only these decoder layers of the student
    dataset: str = "mix"
    prompts: int = 400
    k: int = 2  # teacher answers per prompt
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 128
    # the local teacher's and the student's prompt format; auto: the teacher's own (an endpoint
    # speaks chat), and the student learns in it
    template: str = "auto"
    concurrency: int = 8
    retries: int = 5
    price_prompt: float = 0.55  # USD per 1M prompt tokens (DeepSeek-reasoner list price)
    price_completion: float = 2.19  # USD per 1M completion tokens
    out: str = "runs/distill"
    seed: int = 0
    # the student's fine-tuning (see SFTConfig); epochs 0 collects the traces only
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 32
    eval_problems: int = 100
    eval_k: int = 4
    device: str = "auto"
    engine: str = "auto"

    def validate(self) -> None:
        _check_positive(self, ("prompts", "k", "max_tokens", "concurrency", "batch_size",
                               "eval_k"))  # fmt: skip
        if self.epochs < 0:
            raise R1kitError("--epochs must be >= 0 (0: collect the traces only)")
        if self.retries < 0 or self.price_prompt < 0 or self.price_completion < 0:
            raise R1kitError("--retries and prices must be >= 0")
        if self.template not in ("auto", "r1zero", "chat"):
            raise R1kitError("--template must be auto, r1zero or chat")

    @property
    def url(self) -> str | None:
        t = self.teacher or ""
        return t if t.startswith(("http://", "https://")) else None
