"""Config dataclasses as command-line flags: one flag per field (type from the default or the
annotation), help texts per job, and the config read back from parsed arguments."""

from __future__ import annotations

import argparse
from dataclasses import fields

UNSAFE_HELP = "run model-written code with resource limits only when no sandbox works here"
ZERO_FLAGS_HELP = {
    "model": "hub id or local directory (default: the embedded tiny model)",
    "dataset": "task name(s) arith|linear|countdown|code joined by '+', 'mix', or a .jsonl file",
    "rewards": "weighted rewards, e.g. 'accuracy=1,format=0.5' or 'pkg.mod:fn=0.3'",
    "out": "output directory",
    "recipe": "grpo | dapo | dr_grpo: set the algorithm's fields at once (explicit flags win)",
    "preset": "gpu-small | gpu-code: pretrain a ~25M base on the GPU (once), then R1-Zero at GPU scale",
    "unsafe_exec": UNSAFE_HELP,
}


EVAL_FLAGS_HELP = {
    "benchmark": "math500 | aime24 | aime25 | amc23 | gsm8k (from the Hugging Face hub) | humaneval",
    "data": "a local .jsonl: any dataset, or a copy of --benchmark's",
    "question_field": "the question's field in --data (default: problem/question/prompt)",
    "answer_field": "the gold answer's field (default: answer; GSM8K's '#### x' is understood)",
    "solution_field": "a worked solution whose last \\boxed{} is the gold when there is no answer",
    "k": "samples per problem (default: the R1 protocol's, 64 for AIME, 16 for MATH-500)",
    "temperature": "sampling temperature (default 0.6)",
    "top_p": "nucleus sampling (default 0.95)",
    "max_tokens": "most tokens a sample may generate (default 32768)",
    "limit": "evaluate the first N problems only",
    "out": "output directory (default runs/eval/BENCHMARK)",
    "base_url": "an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1",
    "api_key": "the endpoint's key (default: $OPENAI_API_KEY)",
    "model": "the endpoint's model name (default: the first it lists)",
    "concurrency": "requests in flight to an endpoint (default 16)",
    "retries": "retries per request on 429 / 5xx / connection errors (default 5)",
    "gold": "score the reference solutions/answers instead of a model",
    "engine": "local engine kind for r1kit.engine.make_engine (default auto)",
    "template": "auto | chat | r1zero: the prompt for a local model (default auto)",
    "seed": "sampling seed (local default 0; sent to an endpoint only when given)",
    "grade_timeout": "seconds math-verify may spend on one answer (default 5)",
    "tests_field": "code data: the field with a row's tests (asserts, or HumanEval's check)",
    "entry_point_field": "code data: the field naming the function the tests call",
    "unsafe_exec": UNSAFE_HELP,
}


SFT_FLAGS_HELP = {
    "model": "hub id, local dir or run dir (default: the embedded tiny model)",
    "data": "chat .jsonl (messages, or prompt+completion), a hub dataset id, or traces:TASKS",
    "template": "r1zero | chat: how conversations become tokens",
    "pack_tokens": "pack sequences padding-free into rows of this many tokens (0: pad)",
    "eval_dataset": "held-out problems (task spec or .jsonl) to evaluate before and after",
}
DISTILL_FLAGS_HELP = {
    "teacher": "a local model / run dir, or an OpenAI-compatible URL such as .../v1",
    "teacher_model": "the endpoint's model name, e.g. deepseek-reasoner",
    "api_key": "the endpoint's key (default: $OPENAI_API_KEY)",
    "student": "the student's starting model (default: the embedded one)",
    "student_layers": "keep only these decoder layers of the student, e.g. '0,3'",
    "price_prompt": "USD per 1M prompt tokens, for the cost estimate",
    "price_completion": "USD per 1M completion tokens, for the cost estimate",
}


def flag_type(f) -> type:
    """The flag's type: the default's, else the first of int/float in the annotation."""
    if f.default is not None:
        return type(f.default)
    hint = str(f.type)
    return next((t for t in (int, float) if hint.startswith(t.__name__)), str)


def add_config_flags(p: argparse.ArgumentParser, cls, helps=None, skip=()) -> None:
    """One flag per dataclass field: --group-size, --lr, ... (types from the defaults)."""
    helps = ZERO_FLAGS_HELP if helps is None else helps
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=helps.get(f.name)
            )
        else:
            p.add_argument(flag, type=flag_type(f), default=None, help=helps.get(f.name))


def config_from_args(cls, args: argparse.Namespace, base=None):
    cfg = base or cls()
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    return cfg
