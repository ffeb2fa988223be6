"""The typed parts job configs are composed of: run, algorithm, sampling, optimisation, LoRA,
held-out evaluation, readability filters, endpoint client, dataset columns. A job sets its own
defaults where they differ (`part(Sampling, temperature=0.7)`); the bounds stay the part's."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config.fields import param

DEVICE_HELP = "where to run: auto (cuda when present, else cpu), cpu, cuda, cuda:1, mps"
ENGINE_HELP = "generation engine: auto (paged where supported), paged, or hf (plain transformers)"
ENGINES = ("auto", "paged", "hf")


@dataclass
class Run:
    """Where a job writes, how it is seeded, where it runs."""

    out: str = param("runs/job", "output directory")
    seed: int = param(0, "random seed (data order, sampling, initialisation)")
    device: str = param("auto", DEVICE_HELP)
    engine: str = param("auto", ENGINE_HELP, choices=ENGINES)


@dataclass
class TrainRun(Run):
    """A training run: also how often it checkpoints."""

    save_every: int = param(50, "write a checkpoint every N optimizer steps", ge=1)
    keep_last: int = param(
        3,
        "keep the newest N checkpoints, remove older ones once a newer one is complete (0: all)",
        ge=0,
    )
    nan_policy: str = param(
        "stop",
        "a step with a non-finite loss or gradient norm is never applied; stop: end the run "
        "there; skip: go on (5 skipped steps in a row stop it)",
        choices=("stop", "skip"),
    )
    overwrite: bool = param(
        False,
        "replace the run already in --out (its checkpoints, metrics and final model are "
        "deleted); without it an existing run is refused",
    )
    allow_data_change: bool = param(
        False,
        "with --resume: go on although the training or held-out data changed since the run "
        "started (OUT/data.json holds its hashes); without it a changed dataset is refused",
    )


@dataclass
class ZeroRun(TrainRun):
    """An RL run: a step budget, the weights' dtype and an optional wall-clock limit."""

    steps: int = param(70, "GRPO steps (one generation batch and its update each)", ge=1)
    dtype: str = param(
        "auto",
        "weights' dtype: auto (float32 on CPU, bfloat16 on GPU)",
        choices=("auto", "float32", "bfloat16"),
    )
    time_limit_s: float = param(
        0.0, "stop training after this many seconds, then evaluate (0: no limit)", ge=0
    )
    async_depth: int = param(
        0,
        "1: one-step-off-policy GRPO under torchrun: generator ranks sample step t+1 while "
        "trainer ranks update on step t; 0: every rank samples, then trains",
        ge=0,
        le=1,
    )
    generator_ranks: int = param(
        0,
        "with --async-depth 1: how many ranks (the last ones) sample; the rest train "
        "(0: half the ranks, rounded down)",
        ge=0,
    )


@dataclass
class GRPO:
    """The GRPO algorithm (DESIGN.md section 4); `--recipe` sets several of these at once."""

    prompts_per_step: int = param(16, "prompts per step (each sampled group_size times)", ge=1)
    group_size: int = param(
        8,
        "G: completions per prompt whose rewards are compared",
        ge=2,
        why="advantages compare samples of a group",
    )
    beta: float = param(0.0, "KL weight to a frozen reference model (0 loads no reference)", ge=0)
    eps_low: float = param(0.2, "clip range below 1 of the probability ratio", ge=0)
    eps_high: float = param(0.2, "clip range above 1 of the probability ratio (DAPO: 0.28)", ge=0)
    scale_rewards: str = param(
        "group",
        "divide advantages by the reward std of the group, of the batch, or not at all",
        choices=("group", "batch", "none"),
    )
    loss_agg: str = param(
        "token",
        "loss average: per sequence, over all tokens, or by a constant (Dr. GRPO)",
        choices=("sequence", "token", "constant"),
    )
    mu: int = param(1, "optimizer steps per generation batch (> 1 clips against pi_old)", ge=1)
    mask_truncated: bool = param(
        False, "no loss on completions cut at the length budget (DAPO overlong filtering)"
    )
    overlong_buffer: int = param(
        0,
        "penalise lengths in the last N tokens of the budget (DAPO "
        "soft overlong punishment; 0: off)",
    )
    dynamic_sampling: bool = param(
        False,
        "drop groups whose rewards are all equal and sample "
        "more prompts to refill the batch (DAPO)",
    )
    max_refills: int = param(
        4,
        "with --dynamic-sampling: extra generation rounds per step spent refilling, at most",
        ge=0,
    )
    tis_cap: float = param(
        0.0,
        "truncated importance weight min(pi_old / pi_engine, C) (0: off)",
        ge=0,
        why="0 turns it off",
    )


@dataclass
class Sampling:
    """How completions are sampled."""

    temperature: float = param(1.0, "sampling temperature", ge=0, why="0 is greedy")
    top_p: float = param(
        1.0, "nucleus sampling: the smallest token set with this much probability", gt=0, le=1
    )
    max_tokens: int = param(
        128,
        "most tokens a completion may generate (held-out answers too)",
        ge=1,
        aliases=("max_new_tokens",),
    )


@dataclass
class Optim:
    """The optimizer and how a batch is split for it."""

    lr: float = param(1e-4, "peak learning rate (AdamW)", gt=0)
    weight_decay: float = param(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = param(1.0, "clip the gradient norm to this", gt=0)
    micro_batch: int = param(64, "sequences per forward/backward (memory, not the math)", ge=1)
    pack_tokens: int = param(
        0,
        "pack sequences padding-free into rows of up to this many tokens (0: pad)",
        ge=0,
        why="0 pads instead of packing",
    )


@dataclass
class GRPOOptim(Optim):
    """GRPO's optimizer: constant learning rate after a linear warmup; memory/speed switches."""

    warmup_steps: int = param(0, "linear learning-rate warmup over the first N steps", ge=0)
    grad_checkpoint: bool = param(
        False, "recompute decoder activations in backward (less memory, more compute)"
    )
    compile_update: bool | None = param(
        None,
        "torch.compile the update's decoder layers and LM-head chunks (train/compile.py); "
        "--no-compile-update: eager",
        shown="auto: on for full-parameter training on CUDA in one process",
    )


@dataclass
class SFTOptim(Optim):
    """SFT's optimizer: epochs over the data, linear warmup, then cosine decay."""

    epochs: int = param(1, "passes over the data", ge=0)
    batch_size: int = param(32, "sequences per optimizer step", ge=1)
    warmup_ratio: float = param(0.05, "share of the steps spent warming up linearly", ge=0, lt=1)
    min_lr_ratio: float = param(0.1, "the cosine ends at lr times this", ge=0, le=1)


@dataclass
class Lora:
    """LoRA adapters (peft) instead of training all weights."""

    rank: int = param(0, "train LoRA adapters of this rank instead of all weights (0: off)", ge=0)
    alpha: float = param(0.0, "LoRA alpha (0: 2 x rank)", ge=0)
    targets: str = param(
        "all-linear",
        "modules that get adapters: all-linear, or names joined by ',' (q_proj,v_proj)",
    )


@dataclass
class Heldout:
    """Held-out evaluation before and after training (R1 protocol: T=0.6, top-p 0.95, k
    samples)."""

    problems: int = param(100, "held-out problems evaluated before and after training", ge=0)
    k: int = param(4, "samples per held-out problem (pass@1 averages them)", ge=1)
    temperature: float = param(0.6, "held-out sampling temperature", ge=0, why="0 is greedy")
    top_p: float = param(0.95, "held-out nucleus sampling", gt=0, le=1)


@dataclass
class Readability:
    """Readability filters of rejection sampling (sampling/filters.py Limits)."""

    language: str = param("en", "target language of the reasoning")
    min_language: float = param(
        0.95, "language-consistency share below which a sample counts as mixed", ge=0, le=1
    )
    max_repeats: int = param(3, "a word 4-gram seen more often than this is repetition", ge=1)
    max_paragraph_words: int = param(200, "longest paragraph, in words", ge=1)
    max_code_lines: int = param(30, "longest code block, in lines", ge=1)


@dataclass
class Endpoint:
    """The client of an OpenAI-compatible endpoint."""

    api_key: str | None = param(
        None, "the endpoint's key; never written to disk", shown="$OPENAI_API_KEY"
    )
    concurrency: int = param(16, "requests in flight to the endpoint", ge=1)
    retries: int = param(
        5, "retries per request on 429 / 5xx / connection errors, with backoff", ge=0
    )


@dataclass
class Columns:
    """Where a local .jsonl keeps each part of a problem."""

    question_field: str | None = param(
        None, "the question's field in --data", shown="problem/question/prompt"
    )
    answer_field: str | None = param(
        None, "the gold answer's field (GSM8K's '#### x' is understood)", shown="answer"
    )
    solution_field: str | None = param(
        None,
        "a worked solution whose last \\boxed{} is the gold when there is no answer",
        shown="none",
    )
    tests_field: str | None = param(
        None,
        "code data: the field with a row's tests (asserts, or HumanEval's check)",
        shown="none",
    )
    entry_point_field: str | None = param(
        None, "code data: the field naming the function the tests call", shown="none"
    )
