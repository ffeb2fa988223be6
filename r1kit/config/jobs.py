"""One config per job, composed of typed parts (parts.py) plus the few fields only that job has,
and the few checks that relate fields to each other. Flags, YAML recipe keys and old flat
config.json files use the flat names (`ZeroConfig.flat_fields()`); the attribute paths group
them: `cfg.optim.lr`, `cfg.eval.k`, `cfg.sampling.max_tokens`."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config.fields import JobConfig, param, part
from r1kit.config.parts import (
    ENGINES,
    GRPO,
    Columns,
    Endpoint,
    GRPOOptim,
    Heldout,
    Lora,
    Readability,
    Run,
    Sampling,
    SFTOptim,
    TrainRun,
    ZeroRun,
)
from r1kit.errors import R1kitError

UNSAFE_HELP = "run model-written code with resource limits only when no sandbox works here"
DATASET_HELP = "task name(s) arith|linear|countdown|code joined by '+', 'mix', or a .jsonl file"
EMBEDDED = "the embedded tiny model"
TEMPLATES = ("r1zero", "chat")
AUTO_TEMPLATES = ("auto", "r1zero", "chat")
# SFT's optimizer defaults, shared by the student of `r1kit distill`
SFT_OPTIM = {"lr": 1e-3, "micro_batch": 32, "pack_tokens": 512}


@dataclass
class ZeroConfig(JobConfig):
    """R1-Zero: GRPO from a base model with rule-checked rewards (DESIGN.md section 4)."""

    model: str | None = param(None, "hub id, local directory or run directory", shown=EMBEDDED)
    dataset: str = param("mix", DATASET_HELP)
    eval_data: str | None = param(
        None, "held-out problems as a .jsonl file", shown="the dataset's test split"
    )
    template: str = param("r1zero", "the prompt format trained in", choices=TEMPLATES)
    rewards: str = param(
        "accuracy=1,format=0.5",
        "weighted rewards, e.g. 'accuracy=1,format=0.5' or 'pkg.mod:fn=0.3'",
    )
    recipe: str = param(
        "custom",
        "grpo | dapo | dr_grpo: set the algorithm's fields at once (explicit flags win); "
        "custom: the fields as given",
    )
    preset: str = param(
        "none",
        "gpu-small | gpu-code: pretrain a ~25M base on the GPU (once), then R1-Zero at GPU scale",
    )
    unsafe_exec: bool = param(False, UNSAFE_HELP)
    run: ZeroRun = part(ZeroRun, out="runs/zero", save_every=10)
    algo: GRPO = part(GRPO)
    sampling: Sampling = part(Sampling)
    optim: GRPOOptim = part(GRPOOptim)
    lora: Lora = part(Lora, "lora_")
    eval: Heldout = part(Heldout, "eval_")

    def check(self) -> None:
        if self.sampling.temperature <= 0:
            raise R1kitError("--temperature must be > 0 (GRPO compares sampled completions)")
        if self.eval.problems < 1:
            raise R1kitError("--eval-problems must be >= 1")
        if not 0 <= self.algo.overlong_buffer <= self.sampling.max_tokens:
            raise R1kitError("--overlong-buffer must be between 0 and --max-tokens")


@dataclass
class SFTConfig(JobConfig):
    """Supervised fine-tuning: loss on assistant tokens only, packed rows, warmup + cosine."""

    model: str | None = param(None, "hub id, local dir or run dir", shown=EMBEDDED)
    data: str = param(
        "traces:mix",
        "chat .jsonl (messages, or prompt+completion), a hub dataset id, or traces:TASKS "
        "(worked traces); several joined by ','",
    )
    split: str = param("train", "the hub dataset's split")
    template: str = param("r1zero", "how conversations become tokens", choices=TEMPLATES)
    max_examples: int = param(0, "use at most this many rows (0: all; traces: 2000)", ge=0)
    max_len: int = param(1024, "drop (and count) longer sequences, in tokens", ge=1)
    eval_dataset: str | None = param(
        None,
        "held-out problems (task spec or .jsonl) evaluated before and after",
        shown="the traces' tasks",
    )
    max_tokens: int = param(
        128, "most tokens a held-out answer may generate", ge=1, aliases=("max_new_tokens",)
    )
    run: TrainRun = part(TrainRun, out="runs/sft")
    optim: SFTOptim = part(SFTOptim, **SFT_OPTIM)
    eval: Heldout = part(Heldout, "eval_")

    def check(self) -> None:
        if self.optim.epochs < 1:
            raise R1kitError("--epochs must be >= 1")


@dataclass
class SampleConfig(JobConfig):
    """Rejection sampling: k completions per prompt, keep the verified-correct, readable ones."""

    model: str | None = param(None, "hub id, local dir or run dir", shown=EMBEDDED)
    dataset: str = param("mix", DATASET_HELP + " (its train split)")
    prompts: int = param(500, "prompts to sample (distinct ones are kept)", ge=1)
    k: int = param(4, "samples per prompt", ge=1)
    template: str = param(
        "auto", "prompt format: auto (the model's own), r1zero or chat", choices=AUTO_TEMPLATES
    )
    keep_per_prompt: int = param(2, "keep at most this many distinct samples per prompt", ge=1)
    unsafe_exec: bool = param(False, UNSAFE_HELP)
    run: Run = part(Run, out="runs/sample")
    sampling: Sampling = part(Sampling, temperature=0.7, top_p=0.95)
    filters: Readability = part(Readability)


@dataclass
class DistillConfig(JobConfig):
    """Distillation: a teacher answers prompts with reasoning; verified, readable answers become
    SFT data for a (smaller) student."""

    teacher: str | None = param(
        None, "a local model / run dir, or an OpenAI-compatible URL such as .../v1", shown=EMBEDDED
    )
    teacher_model: str | None = param(
        None, "the endpoint's model name, e.g. deepseek-reasoner", shown="the first it lists"
    )
    student: str | None = param(None, "the student's starting model", shown=EMBEDDED)
    student_layers: str = param(
        "", "keep only these decoder layers of the student, e.g. '0,3'", shown="all"
    )
    dataset: str = param("mix", DATASET_HELP)
    prompts: int = param(400, "distinct train-split prompts the teacher answers", ge=1)
    k: int = param(2, "teacher answers per prompt", ge=1)
    # auto: the teacher's own format (an endpoint speaks chat), and the student learns in it
    template: str = param(
        "auto",
        "the local teacher's and the student's prompt format (auto: the teacher's own)",
        choices=AUTO_TEMPLATES,
    )
    price_prompt: float = param(
        0.55, "USD per 1M prompt tokens, for the cost estimate (DeepSeek-reasoner's)", ge=0
    )
    price_completion: float = param(2.19, "USD per 1M completion tokens, for the estimate", ge=0)
    run: TrainRun = part(TrainRun, out="runs/distill")
    sampling: Sampling = part(Sampling, temperature=0.6, top_p=0.95)
    endpoint: Endpoint = part(Endpoint, concurrency=8)
    # the student's fine-tuning (SFTConfig's optimizer); epochs 0 collects the traces only
    optim: SFTOptim = part(SFTOptim, **{**SFT_OPTIM, "lr": 2e-3, "epochs": 3})
    eval: Heldout = part(Heldout, "eval_")

    @property
    def url(self) -> str | None:
        t = self.teacher or ""
        return t if t.startswith(("http://", "https://")) else None


@dataclass
class EvalConfig(JobConfig):
    """R1-style evaluation (DESIGN.md sections 3 and 6): k samples per problem at T=0.6,
    top-p 0.95, no system prompt, the step-by-step instruction; pass@1, pass@k, cons@k."""

    target: str | None = param(
        None, "model (hub id, local dir, run dir) or an endpoint URL", shown=EMBEDDED
    )
    benchmark: str | None = param(
        None,
        "math500 | aime24 | aime25 | amc23 | gsm8k (from the Hugging Face hub) | humaneval",
        shown="none: --data",
    )
    data: str | None = param(
        None, "a local .jsonl: any dataset, or a copy of --benchmark's", shown="none"
    )
    k: int | None = param(
        None, "samples per problem", ge=1, shown="the R1 protocol's, 64 for AIME, 16 for MATH-500"
    )
    limit: int | None = param(None, "evaluate the first N problems only", ge=1, shown="all")
    out: str | None = param(None, "output directory", shown="runs/eval/BENCHMARK")
    base_url: str | None = param(
        None, "an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1", shown="none"
    )
    model: str | None = param(None, "the endpoint's model name", shown="the first it lists")
    gold: bool = param(False, "score the reference solutions/answers instead of a model")
    engine: str = param(
        "auto", "local engine: auto (paged where supported), paged or hf", choices=ENGINES
    )
    template: str = param(
        "auto",
        "prompt format of a local model: auto (its own, from its tokenizer), chat or r1zero",
        choices=AUTO_TEMPLATES,
    )
    seed: int | None = param(
        None, "sampling seed (sent to an endpoint only when given)", shown="0 locally"
    )
    grade_timeout: float = param(5.0, "seconds math-verify may spend on one answer", gt=0)
    unsafe_exec: bool = param(False, UNSAFE_HELP)
    sampling: Sampling = part(Sampling, temperature=0.6, top_p=0.95, max_tokens=32768)
    endpoint: Endpoint = part(Endpoint)
    columns: Columns = part(Columns)

    @property
    def url(self) -> str | None:
        """The endpoint, when this evaluates one: --base-url, or a URL given as the target."""
        if self.base_url:
            return self.base_url
        t = self.target or ""
        return t if t.startswith(("http://", "https://")) else None
