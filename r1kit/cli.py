"""`r1kit` entry point: one subcommand per job, each a thin call into the library.

Errors the user can fix (R1kitError) print as one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from r1kit.errors import R1kitError

ZERO_FLAGS_HELP = {
    "model": "hub id or local directory (default: the embedded tiny model)",
    "dataset": "task name(s) arith|linear|countdown joined by '+', 'mix', or a .jsonl file",
    "rewards": "weighted rewards, e.g. 'accuracy=1,format=0.5' or 'pkg.mod:fn=0.3'",
    "out": "output directory",
    "recipe": "grpo | dapo | dr_grpo: set the algorithm's fields at once (explicit flags win)",
}


EVAL_FLAGS_HELP = {
    "benchmark": "math500 | aime24 | aime25 | amc23 | gsm8k (loaded from the Hugging Face hub)",
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
}


def _flag_type(f) -> type:
    """The flag's type: the default's, else the first of int/float in the annotation."""
    if f.default is not None:
        return type(f.default)
    hint = str(f.type)
    return next((t for t in (int, float) if hint.startswith(t.__name__)), str)


def _add_config_flags(p: argparse.ArgumentParser, cls, helps=None, skip=()) -> None:
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
            p.add_argument(flag, type=_flag_type(f), default=None, help=helps.get(f.name))


def _config_from_args(cls, args: argparse.Namespace, base=None):
    cfg = base or cls()
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    return cfg


def cmd_zero(args: argparse.Namespace) -> int:
    from r1kit.config import ZeroConfig

    base = None
    if args.resume:
        saved = Path(args.resume) / "config.json"
        if not saved.exists():
            raise R1kitError(f"nothing to resume in {args.resume} (no config.json)")
        if args.out and Path(args.out) != Path(args.resume):
            raise R1kitError("--resume continues in its own directory; drop --out")
        base = ZeroConfig.from_dict(json.loads(saved.read_text()))
        args.out = args.resume
    cfg = _config_from_args(ZeroConfig, args, base)
    if args.recipe is not None:
        from r1kit.config import apply_recipe

        explicit = {f.name for f in fields(ZeroConfig) if getattr(args, f.name, None) is not None}
        cfg = apply_recipe(cfg, args.recipe, explicit - {"recipe"})
    from r1kit.rl.zero import run_zero

    summary = run_zero(cfg, resume=bool(args.resume), progress=not args.quiet)
    _print_summary(summary, cfg.out)
    return 0


def _print_summary(s: dict, out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"held-out results ({s['eval_problems']} problems, k={s['k']})")
    t.add_column("")
    t.add_column("base", justify="right")
    t.add_column("final", justify="right")
    for label, key in [
        ("pass@1", "pass1"),
        (f"pass@{s['k']}", "passk"),
        ("format rate", "format_rate"),
        ("accuracy | well-formatted", "formatted_accuracy"),
        ("mean length", "mean_length"),
        ("reflection rate", "reflection_rate"),
    ]:
        t.add_row(label, f"{s['base_' + key]:.3f}", f"{s['final_' + key]:.3f}")
    c = Console()
    c.print(t)
    c.print(
        f"{s['steps']} steps in {s['wall_s']:.0f}s; wrote {out}/summary.json, "
        f"{out}/report.png, {out}/metrics.jsonl, {out}/final/"
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from r1kit.config import EvalConfig
    from r1kit.eval.report import print_summary
    from r1kit.eval.run import run_eval

    cfg = _config_from_args(EvalConfig, args)
    summary = run_eval(cfg, progress=not args.quiet)
    if args.quiet:
        keys = ("pass@1", "pass@k", "cons@k")
        print(" ".join(f"{k}={summary[k]:.4f}" for k in keys) + f" k={summary['k']}")
    else:
        print_summary(summary, summary["out"])
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from r1kit.pretrain.train import PRESETS, pretrain

    if args.preset not in PRESETS:
        raise R1kitError(f"unknown preset {args.preset!r}; available: {', '.join(PRESETS)}")
    cfg = PRESETS[args.preset]
    if args.out:
        cfg.out = args.out
    if args.steps:
        cfg.steps = args.steps
    s = pretrain(cfg, progress=not args.quiet)
    print(
        f"pretrained {s['params']:,} parameters on {s['tokens']:,} tokens in {s['wall_s']:.0f}s "
        f"(final loss {s['final_loss']:.3f}); saved to {cfg.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from r1kit import __version__
    from r1kit.config import EvalConfig, ZeroConfig

    p = argparse.ArgumentParser(
        prog="r1kit", description="Train reasoning models the DeepSeek-R1 way."
    )
    p.add_argument("--version", action="version", version=f"r1kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    z = sub.add_parser("zero", help="R1-Zero: GRPO with rule-checked rewards from a base model")
    _add_config_flags(z, ZeroConfig)
    z.add_argument("--resume", metavar="OUT", help="continue a stopped run in OUT")
    z.add_argument("--quiet", action="store_true", help="no progress output")
    z.set_defaults(func=cmd_zero)

    e = sub.add_parser(
        "eval",
        help="R1-style evaluation: pass@1 over k samples, pass@k, cons@k; local or remote",
        description="Evaluate a model (hub id, local dir, run dir; default the embedded one) or "
        "an OpenAI-compatible endpoint URL the way the R1 paper does.",
    )
    e.add_argument("target", nargs="?", metavar="MODEL_OR_URL", default=None)
    _add_config_flags(e, EvalConfig, EVAL_FLAGS_HELP, skip=("target",))
    e.add_argument("--quiet", action="store_true", help="no progress or table: one result line")
    e.set_defaults(func=cmd_eval)

    pt = sub.add_parser("pretrain", help="build a small base model on the procedural corpus")
    pt.add_argument("--preset", default="tiny")
    pt.add_argument("--out", default=None, help="output directory (default: runs/pretrain-PRESET)")
    pt.add_argument("--steps", type=int, default=None)
    pt.add_argument("--quiet", action="store_true")
    pt.set_defaults(func=cmd_pretrain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except R1kitError as err:
        print(f"r1kit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("r1kit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
