"""`r1kit` entry point: one subcommand per job, each a thin call into the library.

Errors the user can fix (R1kitError) print as one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from r1kit.cli_flags import (
    DISTILL_FLAGS_HELP,
    EVAL_FLAGS_HELP,
    SFT_FLAGS_HELP,
    ZERO_FLAGS_HELP,
    add_config_flags,
    config_from_args,
)
from r1kit.errors import R1kitError

# --template of the commands that use a model as it is (serve, run, export)
TEMPLATE_FLAG = {
    "default": "auto",
    "choices": ["auto", "r1zero", "chat"],
    "help": "prompt format: auto (the model's own, from its tokenizer), r1zero or chat",
}


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
    cfg = config_from_args(ZeroConfig, args, base)
    if args.preset is not None:
        from r1kit.config import apply_preset

        explicit = {f.name for f in fields(ZeroConfig) if getattr(args, f.name, None) is not None}
        need = apply_preset(cfg, args.preset, explicit - {"preset"})
        if need:
            cfg.model = _pretrained_base(need)
    if args.recipe is not None:
        from r1kit.config import apply_recipe

        explicit = {f.name for f in fields(ZeroConfig) if getattr(args, f.name, None) is not None}
        cfg = apply_recipe(cfg, args.recipe, explicit - {"recipe"})
    from r1kit import dist
    from r1kit.rl.zero import run_zero

    summary = run_zero(cfg, resume=bool(args.resume), progress=not args.quiet)
    if dist.is_main():  # under torchrun rank 0 reports
        from r1kit.rl.report import print_summary

        print_summary(summary, cfg.out)
    dist.shutdown()
    return 0


def _pretrained_base(preset: str) -> str:
    """The base model a zero preset starts from: built once with `r1kit pretrain`, then reused."""
    from r1kit.pretrain.train import PRESETS, pretrain

    cfg = PRESETS[preset]
    if not (Path(cfg.out) / "model.safetensors").exists():
        print(f"building the {preset} base model first ({cfg.out})")
        pretrain(cfg)
    return cfg.out


def cmd_eval(args: argparse.Namespace) -> int:
    from r1kit.config import EvalConfig
    from r1kit.eval.report import print_summary
    from r1kit.eval.run import run_eval

    cfg = config_from_args(EvalConfig, args)
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


def cmd_serve(args: argparse.Namespace) -> int:
    from r1kit.serve.app import serve

    serve(args.model, host=args.host, port=args.port, db=args.db, no_auth=args.no_auth,
          engine=args.engine, max_waiting=args.max_waiting, rpm=args.rpm, name=args.name,
          max_body=_size(args.max_body), allow_origin=tuple(args.allow_origin or ()),
          template=args.template, prefix_cache=not args.no_prefix_cache)  # fmt: skip
    return 0


def _size(text: str) -> int:
    """A byte count with an optional K/M/G suffix (powers of 1024): "4M" -> 4194304."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise R1kitError(f"--max-body: not a size: {text!r} (bytes, or 512K, 4M...)") from None


def _prices(args: argparse.Namespace, currency: str):
    """The rates the flags give, the others from DeepSeek's list prices in `currency`."""
    from r1kit.serve.limits import DEFAULT_PRICES, Prices

    base = DEFAULT_PRICES.get(currency)
    flags = (args.price_prompt, args.price_cache_hit, args.price_completion)
    if base is None and None in flags:
        raise R1kitError(f"no default prices for {currency!r}: give all three --price-* flags")
    return Prices(*(f if f is not None else b for f, b in zip(flags, base or flags)))


def cmd_keys(args: argparse.Namespace) -> int:
    from r1kit.serve.store import Store

    store = Store(args.db)
    if args.action == "create":
        cur = args.currency.upper()
        key, k = store.create_key(args.name or "", args.quota, args.rpm, credit=args.credit,
                                  currency=cur, prices=_prices(args, cur))  # fmt: skip
        print(key)
        print(f"created key {k.id} in {store.path}; it is shown only now", file=sys.stderr)
    elif args.action == "list":
        from datetime import datetime

        for k in store.list_keys():
            when = datetime.fromtimestamp(k.created).strftime("%Y-%m-%d %H:%M")
            state = "revoked" if k.revoked else "active"
            credit = f"  credit={k.credit:g} {k.currency}" if k.credit is not None else ""
            print(f"{k.id}  {state:7}  {when}  quota={k.quota_tokens}  rpm={k.rpm}{credit}  "
                  f"{k.name}")  # fmt: skip
    elif args.action == "revoke":
        if not args.id or not store.revoke(args.id):
            raise R1kitError(f"no active key with id {args.id!r} (see `r1kit keys list`)")
        print(f"revoked {args.id}")
    else:  # usage
        cur = args.currency.upper()
        p = _prices(args, cur)  # cache hits at their own rate, as DeepSeek bills them
        print(f"key       requests  prompt  cache_hit  completion  reasoning  cost_{cur.lower()}"
              "  name")  # fmt: skip
        for u in store.usage():
            cost = p.cost(u["prompt_tokens"], u["cache_hit_tokens"], u["completion_tokens"])
            print(f"{u['id']:8}  {u['requests']:8}  {u['prompt_tokens']:6}  "
                  f"{u['cache_hit_tokens']:9}  {u['completion_tokens']:10}  "
                  f"{u['reasoning_tokens']:9}  {cost:8.4f}  {u['name']}")  # fmt: skip
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from r1kit.serve.term import run

    return run(args.model, base_url=args.base_url, api_key=args.api_key,
               think=not args.nothink, engine=args.engine, template=args.template)  # fmt: skip


def cmd_sft(args: argparse.Namespace) -> int:
    from r1kit.config import SFTConfig
    from r1kit.sft.train import run_sft

    base = None
    if args.resume:
        saved = Path(args.resume) / "config.json"
        if not saved.exists():
            raise R1kitError(f"nothing to resume in {args.resume} (no config.json)")
        base = SFTConfig(**json.loads(saved.read_text()))
        args.out = args.resume
    cfg = config_from_args(SFTConfig, args, base)
    from r1kit import dist

    s = run_sft(cfg, resume=bool(args.resume), progress=not args.quiet)
    line = f"{s['examples']} examples, {s['steps']} steps, loss {s['final_loss']:.4f}"
    if "final_pass1" in s:
        line += f"; held-out pass@1 {s['base_pass1']:.3f} -> {s['final_pass1']:.3f}"
    if dist.is_main():  # under torchrun rank 0 reports
        print(f"{line}; {s['wall_s']:.0f}s; wrote {cfg.out}/final/")
    dist.shutdown()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from r1kit.config import SampleConfig
    from r1kit.pipeline.sample import print_stats, run_sample

    cfg = config_from_args(SampleConfig, args)
    stats = run_sample(cfg, progress=not args.quiet)
    print_stats(stats, cfg.out)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from r1kit.pipeline.run import run_pipeline

    recipe = args.recipe
    bundled = Path(__file__).parent / "recipes" / f"{recipe}.yaml"
    if not Path(recipe).exists() and bundled.exists():
        recipe = str(bundled)
    s = run_pipeline(recipe, only=args.only, progress=not args.quiet)
    print(f"final model: {s['final_model']}; report: {Path(s['final_model']).parents[1]}/report.md")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from r1kit.config import DistillConfig
    from r1kit.pipeline.distill import print_distill, run_distill

    cfg = config_from_args(DistillConfig, args)
    from r1kit import dist

    s = run_distill(cfg, progress=not args.quiet)
    if dist.is_main():  # under torchrun rank 0 reports
        print_distill(s, cfg.out)
    dist.shutdown()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from r1kit.export.gguf import check_outtype

    check_outtype(args.outtype)  # before any loading: a bad value fails at once
    if args.format == "gguf":
        from r1kit.export.gguf import export_gguf

        r = export_gguf(args.model, args.outtype, args.out, args.name, args.template)
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(r.types.items()))
        print(f"wrote {r.path} ({r.size_bytes / 2**20:.2f} MiB; {r.arch}, {r.params:,} params; "
              f"tensors: {kinds})")  # fmt: skip
        for f in r.fallbacks:
            print(f"  {f}")
        return 0
    from r1kit.export.modelfile import export_ollama

    o = export_ollama(args.model, args.outtype, args.out, args.name, args.template)
    print(f"wrote {o.gguf} and {o.modelfile}")
    if not o.r1_template:
        print("  the tokenizer's chat template is not R1-style: no TEMPLATE written, Ollama "
              "infers one from the GGUF")  # fmt: skip
    print(f"load it into Ollama with:\n  {o.create_cmd}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from r1kit.export.info import describe, format_info, memory_table

    info = describe(args.model)
    mem = memory_table(info, ctx=args.ctx, lora_rank=args.lora_rank)
    if args.json:
        from dataclasses import asdict

        d = {k: v for k, v in asdict(info).items() if k not in ("shapes", "linear_shapes")}
        print(json.dumps({**d, "memory_bytes": mem}, indent=2))
    else:
        print(format_info(info, mem))
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
    add_config_flags(z, ZeroConfig)
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
    add_config_flags(e, EvalConfig, EVAL_FLAGS_HELP, skip=("target",))
    e.add_argument("--quiet", action="store_true", help="no progress or table: one result line")
    e.set_defaults(func=cmd_eval)

    sv = sub.add_parser(
        "serve", help="serve a model: OpenAI/DeepSeek API, Ollama API and a web chat at /"
    )
    sv.add_argument("model", nargs="?", default=None,
                    help="hub id, model dir, run dir, or a .gguf file (llama.cpp)")  # fmt: skip
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--db", default=None, help="SQLite file (default: the user's data dir)")
    sv.add_argument("--no-auth", action="store_true", help="no keys (loopback addresses only)")
    sv.add_argument("--engine", default="auto", help="auto | paged | hf")
    sv.add_argument("--no-prefix-cache", action="store_true",
                    help="do not keep prompt KV blocks for reuse by later requests")  # fmt: skip
    sv.add_argument("--max-waiting", type=int, default=256, help="queued requests before 503")
    sv.add_argument("--rpm", type=int, default=None, help="default requests/minute per key")
    sv.add_argument("--name", default=None, help="the model name clients see")
    sv.add_argument("--template", **TEMPLATE_FLAG)
    sv.add_argument("--max-body", default="4M", help="largest request body (bytes, 512K, 4M...)")
    sv.add_argument("--allow-origin", action="append", default=None, metavar="ORIGIN",
                    help="answer CORS requests from this origin (repeatable; default: none)")  # fmt: skip
    sv.set_defaults(func=cmd_serve)

    k = sub.add_parser("keys", help="API keys for `r1kit serve`: create | list | revoke | usage")
    k.add_argument("action", choices=["create", "list", "revoke", "usage"])
    k.add_argument("id", nargs="?", default=None, help="the key id to revoke")
    k.add_argument("--db", default=None, help="SQLite file (default: the user's data dir)")
    k.add_argument("--name", default=None, help="a label for a new key")
    k.add_argument("--quota", type=int, default=None, help="tokens a new key may use (then 402)")
    k.add_argument("--rpm", type=int, default=None, help="requests per minute (then 429)")
    k.add_argument("--credit", type=float, default=None,
                   help="money a new key may spend at its rates (then 402; /user/balance)")  # fmt: skip
    k.add_argument("--currency", default="USD", help="USD or CNY (DeepSeek's prices), or any")
    k.add_argument("--price-prompt", type=float, default=None,
                   help="per 1M prompt tokens, cache miss (USD 0.55, CNY 4)")  # fmt: skip
    k.add_argument("--price-cache-hit", type=float, default=None,
                   help="per 1M prompt tokens served from the context cache (USD 0.14, CNY 1)")  # fmt: skip
    k.add_argument("--price-completion", type=float, default=None,
                   help="per 1M completion tokens (USD 2.19, CNY 16)")  # fmt: skip
    k.set_defaults(func=cmd_keys)

    r = sub.add_parser("run", help="chat with a model in the terminal (like `ollama run`)")
    r.add_argument("model", nargs="?", default=None, help="hub id, model dir or run dir")
    r.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint instead")
    r.add_argument("--api-key", default=None, help="the endpoint's key ($R1KIT_API_KEY)")
    r.add_argument("--nothink", action="store_true", help="start with thinking off")
    r.add_argument("--engine", default="auto", help="auto | paged | hf")
    r.add_argument("--template", **TEMPLATE_FLAG)
    r.set_defaults(func=cmd_run)

    from r1kit.config import DistillConfig, SampleConfig, SFTConfig

    sf = sub.add_parser("sft", help="supervised fine-tuning on chat JSONL, a hub dataset or traces")
    add_config_flags(sf, SFTConfig, SFT_FLAGS_HELP)
    sf.add_argument("--resume", metavar="OUT", help="continue a stopped run in OUT")
    sf.add_argument("--quiet", action="store_true")
    sf.set_defaults(func=cmd_sft)

    sa = sub.add_parser(
        "sample", help="rejection sampling: k samples/prompt, keep correct+readable"
    )
    add_config_flags(sa, SampleConfig, {"dataset": ZERO_FLAGS_HELP["dataset"]})
    sa.add_argument("--quiet", action="store_true")
    sa.set_defaults(func=cmd_sample)

    pl = sub.add_parser("pipeline", help="the R1 multi-stage recipe from a YAML file")
    pl.add_argument("recipe", help="RECIPE.yaml, or the name of a bundled one (r1_tiny)")
    pl.add_argument("--only", metavar="STAGE", help="re-run this stage alone")
    pl.add_argument("--quiet", action="store_true")
    pl.set_defaults(func=cmd_pipeline)

    di = sub.add_parser("distill", help="distil a teacher (local or endpoint) into a student")
    add_config_flags(di, DistillConfig, DISTILL_FLAGS_HELP)
    di.add_argument("--quiet", action="store_true")
    di.set_defaults(func=cmd_distill)

    from r1kit.export.gguf import OUTTYPES

    ex = sub.add_parser("export", help="local formats: a GGUF file, or a GGUF + Ollama Modelfile")
    ex.add_argument("format", choices=["gguf", "ollama"])
    ex.add_argument("model", nargs="?", default=None, metavar="MODEL_OR_RUN",
                    help="hub id, model dir or run dir (default: the embedded model)")  # fmt: skip
    ex.add_argument("--outtype", default="f16", help=f"{' | '.join(OUTTYPES)} (default f16)")
    ex.add_argument("--out", default=None,
                    help="gguf: a .gguf path or a directory (default .); ollama: a directory "
                    "(default ./NAME-ollama)")  # fmt: skip
    ex.add_argument("--name", default=None, help="model name in the file (default: from MODEL)")
    ex.add_argument("--template", **TEMPLATE_FLAG)
    ex.set_defaults(func=cmd_export)

    inf = sub.add_parser("info", help="parameters, context, and memory to run or train a model")
    inf.add_argument("model", nargs="?", default=None, metavar="MODEL_OR_RUN_OR_GGUF")
    inf.add_argument("--ctx", type=int, default=None,
                     help="context for the KV-cache estimate (default: min(model's, 4096))")  # fmt: skip
    inf.add_argument("--lora-rank", type=int, default=16, help="rank for the LoRA estimate")
    inf.add_argument("--json", action="store_true", help="print JSON (bytes)")
    inf.set_defaults(func=cmd_info)

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
