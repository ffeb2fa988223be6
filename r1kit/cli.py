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
}


def _add_config_flags(p: argparse.ArgumentParser, cls) -> None:
    """One flag per dataclass field: --group-size, --lr, ... (types from the defaults)."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            typ = type(default) if default is not None else str
            p.add_argument(flag, type=typ, default=None, help=ZERO_FLAGS_HELP.get(f.name))


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
    from r1kit.config import ZeroConfig

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
