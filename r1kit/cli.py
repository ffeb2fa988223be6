"""`r1kit` entry point: one subcommand per job, each a thin call into the library.

Errors the user can fix (R1kitError) print as one line and exit 2; no traceback.

Only the parser's own needs are imported here (configs, flag names, presets: no torch), so
`r1kit --help` and `r1kit SUB --help` answer at once; each command imports its job when it runs
(torch, transformers, fastapi... come with it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from r1kit import __version__
from r1kit.config import (
    DistillConfig,
    EvalConfig,
    SampleConfig,
    SFTConfig,
    ZeroConfig,
    apply_preset,
    apply_recipe,
)
from r1kit.config.flags import (
    DefaultsFormatter,
    add_config_flags,
    config_from_args,
    explicit_fields,
)
from r1kit.config.parts import ENGINES
from r1kit.errors import R1kitError, disk_error
from r1kit.eval import report as eval_report
from r1kit.export.formats import CHECK_ALL, CHECK_FORMATS, GPTQ_BITS, OUTTYPES
from r1kit.pretrain.presets import PRESETS
from r1kit.rl import report as zero_report
from r1kit.serve.limits import DEFAULT_PRICES, Prices
from r1kit.serve.store import Store
from r1kit.train.lock import holder
from r1kit.train.skipped import skipped_line

# The commands' own imports are in their functions: each of those modules imports torch (and
# transformers, fastapi...) at its top, seconds that `r1kit --help` need not wait for.

# --template of the commands that use a model as it is (serve, run, export)
TEMPLATE_FLAG = {
    "default": "auto",
    "choices": ["auto", "r1zero", "chat"],
    "help": "prompt format: auto (the model's own, from its tokenizer), r1zero or chat",
}


def _saved_config(cls, run_dir: str, job: str):
    """The config a run of `job` wrote to RUN/config.json (nested by part, or the older flat
    form); another job's run is refused by name (its run.lock says which job wrote it)."""
    saved = Path(run_dir) / "config.json"
    other = (holder(Path(run_dir)) or {}).get("job")
    if other not in (None, job):
        from r1kit.train.run import how_to_continue  # optional: torch (through r1kit.dist)

        hint = how_to_continue(other, Path(run_dir))
        raise R1kitError(
            f"{run_dir} holds a {other} run, not a {job} run"
            + (f": continue it with {hint}" if hint else "")
        )
    if not saved.exists():
        raise R1kitError(f"nothing to resume in {run_dir} (no config.json)")
    try:
        return cls.from_dict(json.loads(saved.read_text()))
    except (ValueError, TypeError) as err:  # torn, garbled, or not this job's fields
        raise R1kitError(
            f"{saved} is damaged ({type(err).__name__}: {str(err).splitlines()[0][:80]}): "
            "restore it from a copy, or start the run again with --overwrite"
        ) from None


def cmd_zero(args: argparse.Namespace) -> int:
    from r1kit import dist  # optional: torch
    from r1kit.rl.zero import run_zero  # optional: torch, transformers

    base = None
    if args.resume:
        if getattr(args, "out", None) and Path(args.out) != Path(args.resume):
            raise R1kitError("--resume continues in its own directory; drop --out")
        base = _saved_config(ZeroConfig, args.resume, "zero")
        base.run.out = args.resume
        base.run.allow_data_change = False  # never carried over: each --resume says
    cfg = config_from_args(ZeroConfig, args, base)
    explicit = set(explicit_fields(ZeroConfig, args))
    if "preset" in explicit:
        need = apply_preset(cfg, cfg.preset, explicit - {"preset"})
        if need:
            cfg.model = _pretrained_base(need)
    if "recipe" in explicit:
        cfg = apply_recipe(cfg, cfg.recipe, explicit - {"recipe"})
    cfg.validate()  # a bad setting fails here, before anything loads
    summary = run_zero(cfg, resume=bool(args.resume), progress=not args.quiet)
    if dist.is_main() and args.quiet:  # one line, as `r1kit eval --quiet` gives
        keys = ("pass1", "passk")
        line = " ".join(
            f"{w}_{k}={summary[f'{w}_{k}']:.4f}" for w in ("base", "final") for k in keys
        )
        if summary["nonfinite_skipped"]:  # --nan-policy skip: updates not applied
            line += f" nonfinite_skipped={summary['nonfinite_skipped']}"
        print(f"{line} k={summary['k']} steps={summary['steps']} out={cfg.run.out}")
    elif dist.is_main():  # under torchrun rank 0 reports
        zero_report.print_summary(summary, cfg.run.out)
    dist.shutdown()
    return 0


def _pretrained_base(preset: str) -> str:
    """The base model a zero preset starts from: built once with `r1kit pretrain`, then reused."""
    cfg = PRESETS[preset]
    if not (Path(cfg.out) / "model.safetensors").exists():
        from r1kit.pretrain.train import pretrain  # optional: torch, transformers

        print(f"building the {preset} base model first ({cfg.out})")
        pretrain(replace(cfg, overwrite=True))  # no weights there: an unfinished build
    return cfg.out


def cmd_eval(args: argparse.Namespace) -> int:
    from r1kit.eval.run import run_eval  # optional: torch, transformers

    cfg = config_from_args(EvalConfig, args)
    cfg.validate()
    summary = run_eval(cfg, progress=not args.quiet)
    if args.quiet:
        keys = ("pass@1", "pass@k", "cons@k")
        print(" ".join(f"{k}={summary[k]:.4f}" for k in keys) + f" k={summary['k']}")
    else:
        eval_report.print_summary(summary, summary["out"])
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from r1kit.pretrain.train import pretrain  # optional: torch, transformers

    if args.preset not in PRESETS:
        raise R1kitError(f"unknown preset {args.preset!r}; available: {', '.join(PRESETS)}")
    # the preset stays as it is
    cfg = replace(PRESETS[args.preset], overwrite=args.overwrite, nan_policy=args.nan_policy)
    if args.out:
        cfg.out = args.out
    if args.steps is not None:
        cfg.steps = args.steps
    s = pretrain(cfg, progress=not args.quiet)
    print(
        f"pretrained {s['params']:,} parameters on {s['tokens']:,} tokens in {s['wall_s']:.0f}s "
        f"(final loss {s['final_loss']:.3f}); saved to {cfg.out}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from r1kit.serve.app import serve  # optional: torch (fastapi, uvicorn, torch)

    serve(
        args.model,
        host=args.host,
        port=args.port,
        db=args.db,
        no_auth=args.no_auth,
        engine=args.engine,
        max_waiting=args.max_waiting,
        rpm=args.rpm,
        name=args.name,
        max_body=_size(args.max_body),
        allow_origin=tuple(args.allow_origin or ()),
        template=args.template,
        prefix_cache=not args.no_prefix_cache,
        api_workers=args.api_workers,
    )
    return 0


def _size(text: str) -> int:
    """A byte count with an optional K/M/G suffix (powers of 1024): "4M" -> 4194304."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise R1kitError(f"--max-body: not a size: {text!r} (bytes, or 512K, 4M...)") from None


def _prices(args: argparse.Namespace, currency: str) -> Prices:
    """The rates the flags give, the others from DeepSeek's list prices in `currency`."""
    base = DEFAULT_PRICES.get(currency)
    flags = (args.price_prompt, args.price_cache_hit, args.price_completion)
    if base is None and None in flags:
        raise R1kitError(f"no default prices for {currency!r}: give all three --price-* flags")
    return Prices(*(f if f is not None else b for f, b in zip(flags, base or flags)))


def cmd_keys(args: argparse.Namespace) -> int:
    store = Store(args.db)
    if args.action == "create":
        cur = args.currency.upper()
        key, k = store.create_key(
            args.name or "",
            args.quota,
            args.rpm,
            credit=args.credit,
            currency=cur,
            prices=_prices(args, cur),
        )
        print(key)
        print(f"created key {k.id} in {store.path}; it is shown only now", file=sys.stderr)
    elif args.action == "list":
        for k in store.list_keys():
            when = datetime.fromtimestamp(k.created).strftime("%Y-%m-%d %H:%M")
            state = "revoked" if k.revoked else "active"
            credit = f"  credit={k.credit:g} {k.currency}" if k.credit is not None else ""
            print(
                f"{k.id}  {state:7}  {when}  quota={k.quota_tokens}  rpm={k.rpm}{credit}  {k.name}"
            )
    elif args.action == "revoke":
        if not args.id:
            raise R1kitError("keys revoke needs the key's id (see `r1kit keys list`)")
        if not store.revoke(args.id):
            raise R1kitError(f"no active key with id {args.id!r} (see `r1kit keys list`)")
        print(f"revoked {args.id}")
    else:  # usage
        cur = args.currency.upper()
        p = _prices(args, cur)  # cache hits at their own rate, as DeepSeek bills them
        print(
            f"key       requests  prompt  cache_hit  completion  reasoning  cost_{cur.lower()}"
            "  name"
        )
        for u in store.usage():
            cost = p.cost(u["prompt_tokens"], u["cache_hit_tokens"], u["completion_tokens"])
            print(
                f"{u['id']:8}  {u['requests']:8}  {u['prompt_tokens']:6}  "
                f"{u['cache_hit_tokens']:9}  {u['completion_tokens']:10}  "
                f"{u['reasoning_tokens']:9}  {cost:8.4f}  {u['name']}"
            )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from r1kit.serve import term  # optional: torch (fastapi, torch)

    return term.run(
        args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        think=not args.nothink,
        engine=args.engine,
        template=args.template,
    )


def cmd_sft(args: argparse.Namespace) -> int:
    from r1kit import dist  # optional: torch
    from r1kit.sft.train import run_sft  # optional: torch, transformers

    base = None
    if args.resume:
        base = _saved_config(SFTConfig, args.resume, "sft")
        base.run.out = args.resume
        base.run.allow_data_change = False  # never carried over: each --resume says
    cfg = config_from_args(SFTConfig, args, base)
    cfg.validate()
    s = run_sft(cfg, resume=bool(args.resume), progress=not args.quiet)
    line = f"{s['examples']} examples, {s['steps']} steps, loss {s['final_loss']:.4f}"
    if "final_pass1" in s:
        line += f"; held-out pass@1 {s['base_pass1']:.3f} -> {s['final_pass1']:.3f}"
    if dist.is_main():  # under torchrun rank 0 reports
        print(f"{line}; {s['wall_s']:.0f}s; wrote {cfg.run.out}/final/")
        skipped = skipped_line(s)
        if skipped:
            print(skipped)
    dist.shutdown()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from r1kit.pipeline.sample import (  # optional: torch, transformers
        print_stats,
        run_sample,
    )

    cfg = config_from_args(SampleConfig, args)
    cfg.validate()
    stats = run_sample(cfg, progress=not args.quiet)
    print_stats(stats, cfg.run.out)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from r1kit.pipeline.run import run_pipeline  # optional: torch, transformers

    recipe = args.recipe
    bundled = Path(__file__).parent / "recipes" / f"{recipe}.yaml"
    if not Path(recipe).exists() and bundled.exists():
        recipe = str(bundled)
    s = run_pipeline(recipe, only=args.only, progress=not args.quiet, out=args.out)
    final = s["final_model"] or "the embedded model"  # no model stage ran: the recipe's base
    print(f"final model: {final}; report: {Path(s['out']) / 'report.md'}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from r1kit import dist  # optional: torch
    from r1kit.pipeline.distill import (  # optional: torch, transformers
        print_distill,
        run_distill,
    )

    base = None
    if args.resume:  # the settings OUT/config.json holds; flags given now override them
        if getattr(args, "out", None) and Path(args.out) != Path(args.resume):
            raise R1kitError("--resume continues in its own directory; drop --out")
        base = _saved_config(DistillConfig, args.resume, "distill")
        base.run.out = args.resume
        base.run.overwrite = False  # a saved --overwrite would throw away what it resumes
    cfg = config_from_args(DistillConfig, args, base)
    cfg.validate()
    s = run_distill(cfg, progress=not args.quiet)
    if dist.is_main():  # under torchrun rank 0 reports
        print_distill(s, cfg.run.out)
    dist.shutdown()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from r1kit.export.check import parse_formats  # optional: torch, transformers
    from r1kit.export.gguf import check_outtype, export_gguf, model_name  # optional: numpy (gguf)
    from r1kit.export.gptq import (
        FORMAT as GPTQ_FORMAT,  # optional: torch (through sampling)
    )
    from r1kit.export.gptq import export_gptq  # optional: torch
    from r1kit.export.modelfile import export_ollama  # optional: torch

    check_outtype(args.outtype)  # before any loading: a bad value fails at once
    if args.format == "check":
        return _export_check(args, parse_formats(args.formats), {})
    if args.format == "gptq":
        out = args.out or f"{model_name(args.model)}-gptq-{args.bits}bit"
        g = export_gptq(args.model, out, args.bits, args.group_size, args.calibration, args.samples)
        print(
            f"wrote {g.path} ({g.size_bytes / 2**20:.2f} MiB; {g.arch}, {g.quantized} linear "
            f"layers at {g.bits} bits, group size {g.group_size}, {GPTQ_FORMAT}; "
            f"calibration: {g.calibration})"
        )
        if args.check:
            return _export_check(args, ["hf", f"gptq-{g.bits}"], {f"gptq-{g.bits}": g.path})
        return 0
    if args.format == "gguf":
        r = export_gguf(args.model, args.outtype, args.out, args.name, args.template)
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(r.types.items()))
        print(
            f"wrote {r.path} ({r.size_bytes / 2**20:.2f} MiB; {r.arch}, {r.params:,} params; "
            f"tensors: {kinds})"
        )
        for f in r.fallbacks:
            print(f"  {f}")
        if args.check:
            return _export_check(args, ["hf", args.outtype], {args.outtype: r.path})
        return 0
    o = export_ollama(args.model, args.outtype, args.out, args.name, args.template)
    print(f"wrote {o.gguf} and {o.modelfile}")
    if not o.r1_template:
        print(
            "  the tokenizer's chat template is not R1-style: no TEMPLATE written, Ollama "
            "infers one from the GGUF"
        )
    print(f"load it into Ollama with:\n  {o.create_cmd}")
    return 0


def _export_check(args: argparse.Namespace, formats: list[str], exported: dict) -> int:
    """--check: the formats' held-out pass@1 beside the original's (export/check.py)."""
    from r1kit.export.check import (  # optional: torch, transformers
        check_formats,
        format_rows,
    )

    print(f"checking {', '.join(formats)} on held-out problems ...", flush=True)
    rows, setup = check_formats(
        args.model,
        formats,
        args.problems,
        args.k,
        args.max_tokens,
        dataset=args.dataset,
        group_size=args.group_size,
        calibration=args.calibration,
        exported=exported,
        report=lambda r: print(f"  {r.format}: pass@1 {r.pass1:.3f}", flush=True),
    )
    print(format_rows(rows, setup))
    if args.check_out:
        Path(args.check_out).parent.mkdir(parents=True, exist_ok=True)
        rec = {"setup": setup, "rows": [asdict(r) for r in rows]}
        Path(args.check_out).write_text(json.dumps(rec, indent=2) + "\n")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from r1kit.export.info import (  # optional: torch (through gptq)
        describe,
        format_info,
        memory_table,
    )

    info = describe(args.model)
    mem = memory_table(info, ctx=args.ctx, lora_rank=args.lora_rank)
    if args.json:
        d = {k: v for k, v in asdict(info).items() if k not in ("shapes", "linear_shapes")}
        print(json.dumps({**d, "memory_bytes": mem}, indent=2))
    else:
        print(format_info(info, mem))
    return 0


def _quiet(p: argparse.ArgumentParser, help: str = "no progress output") -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def _port(text: str) -> int:
    """A TCP port for argparse: an integer in 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r} (0-65535)")
    return port


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low (a 0 or negative --steps, --ctx or --k would run
    with a default instead, or fail later with a traceback)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or n < low:
            raise argparse.ArgumentTypeError(f"not an integer >= {low}: {text!r}")
        return n

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage error under torchrun is said once per job, not by every
    rank (as main's own errors are, _say_once)."""

    def error(self, message: str) -> NoReturn:
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            super().error(message)  # usage and the line on stderr, exit 2
        _say_once(f"{self.format_usage()}{self.prog}: error: {message}")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """Every flag has a help line ending in its default: the config jobs' flags come from their
    fields (config/flags.py), the others are written here with DefaultsFormatter."""
    p = _Parser(prog="r1kit", description="Train reasoning models the DeepSeek-R1 way.")
    p.add_argument("--version", action="version", version=f"r1kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        kw.setdefault("description", kw.get("help"))  # `r1kit NAME --help` says what it does
        return sub.add_parser(name, formatter_class=DefaultsFormatter, **kw)

    z = command("zero", help="R1-Zero: GRPO with rule-checked rewards from a base model")
    add_config_flags(z, ZeroConfig)
    z.add_argument("--resume", metavar="OUT", help="continue a stopped run in OUT")
    _quiet(z)
    z.set_defaults(func=cmd_zero)

    e = command(
        "eval",
        help="R1-style evaluation: pass@1 over k samples, pass@k, cons@k; local or remote",
        description="Evaluate a model (hub id, local dir, run dir; default the embedded one) or "
        "an OpenAI-compatible endpoint URL the way the R1 paper does.",
    )
    e.add_argument(
        "target",
        nargs="?",
        metavar="MODEL_OR_URL",
        default=None,
        help="hub id, local dir, run dir or endpoint URL (default: the embedded model)",
    )
    add_config_flags(e, EvalConfig, skip=("target",))
    _quiet(e, "no progress or table: one result line")
    e.set_defaults(func=cmd_eval)

    sv = command("serve", help="serve a model: OpenAI/DeepSeek API, Ollama API and a web chat at /")
    sv.add_argument(
        "model",
        nargs="?",
        default=None,
        help="hub id, model dir, run dir, or a .gguf file (llama.cpp)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sv.add_argument("--port", type=_port, default=8000, help="port to listen on (0-65535)")
    sv.add_argument("--db", default=None, help="SQLite file (default: the user's data dir)")
    sv.add_argument("--no-auth", action="store_true", help="no keys (loopback addresses only)")
    sv.add_argument("--engine", default="auto", choices=ENGINES, help="generation engine")
    sv.add_argument(
        "--no-prefix-cache",
        action="store_true",
        help="do not keep prompt KV blocks for reuse by later requests",
    )
    sv.add_argument(
        "--max-waiting", type=_at_least(0), default=256, help="queued requests before 503"
    )
    sv.add_argument(
        "--api-workers",
        type=int,
        default=None,
        metavar="N",
        help="API processes in front of the one engine process (default: 4 on CUDA, 1 on CPU)",
    )
    sv.add_argument(
        "--rpm",
        type=_at_least(1),
        default=None,
        help="default requests/minute per key (default: no limit)",
    )
    sv.add_argument(
        "--name", default=None, help="the model name clients see (default: from the model)"
    )
    sv.add_argument("--template", **TEMPLATE_FLAG)
    sv.add_argument("--max-body", default="4M", help="largest request body (bytes, 512K, 4M...)")
    sv.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="answer CORS requests from this origin (repeatable; default: none)",
    )
    sv.set_defaults(func=cmd_serve)

    k = command("keys", help="API keys for `r1kit serve`: create | list | revoke | usage")
    k.add_argument("action", choices=["create", "list", "revoke", "usage"], help="what to do")
    k.add_argument("id", nargs="?", default=None, help="the key id to revoke")
    k.add_argument("--db", default=None, help="SQLite file (default: the user's data dir)")
    k.add_argument("--name", default=None, help="a label for a new key (default: none)")
    k.add_argument(
        "--quota",
        type=int,
        default=None,
        help="tokens a new key may use, then 402 (default: no quota)",
    )
    k.add_argument(
        "--rpm", type=int, default=None, help="requests per minute, then 429 (default: no limit)"
    )
    k.add_argument(
        "--credit",
        type=float,
        default=None,
        help="money a new key may spend at its rates, then 402; /user/balance (default: no limit)",
    )
    k.add_argument("--currency", default="USD", help="USD or CNY (DeepSeek's prices), or any")
    k.add_argument(
        "--price-prompt",
        type=float,
        default=None,
        help="per 1M prompt tokens, cache miss (default: USD 0.55, CNY 4)",
    )
    k.add_argument(
        "--price-cache-hit",
        type=float,
        default=None,
        help="per 1M prompt tokens served from the context cache (default: USD 0.14, CNY 1)",
    )
    k.add_argument(
        "--price-completion",
        type=float,
        default=None,
        help="per 1M completion tokens (default: USD 2.19, CNY 16)",
    )
    k.set_defaults(func=cmd_keys)

    r = command("run", help="chat with a model in the terminal (like `ollama run`)")
    r.add_argument("model", nargs="?", default=None, help="hub id, model dir or run dir")
    r.add_argument(
        "--base-url", default=None, help="an OpenAI-compatible endpoint instead (default: none)"
    )
    r.add_argument("--api-key", default=None, help="the endpoint's key (default: $R1KIT_API_KEY)")
    r.add_argument("--nothink", action="store_true", help="start with thinking off")
    r.add_argument("--engine", default="auto", choices=ENGINES, help="generation engine")
    r.add_argument("--template", **TEMPLATE_FLAG)
    r.set_defaults(func=cmd_run)

    sf = command("sft", help="supervised fine-tuning on chat JSONL, a hub dataset or traces")
    add_config_flags(sf, SFTConfig)
    sf.add_argument("--resume", metavar="OUT", help="continue a stopped run in OUT")
    _quiet(sf)
    sf.set_defaults(func=cmd_sft)

    sa = command("sample", help="rejection sampling: k samples/prompt, keep correct+readable")
    add_config_flags(sa, SampleConfig)
    _quiet(sa)
    sa.set_defaults(func=cmd_sample)

    pl = command("pipeline", help="the R1 multi-stage recipe from a YAML file")
    pl.add_argument("recipe", help="RECIPE.yaml, or the name of a bundled one (r1_tiny)")
    pl.add_argument("--only", metavar="STAGE", help="re-run this stage alone (default: all)")
    pl.add_argument(
        "--out", metavar="DIR", default=None, help="output directory (default: the recipe's out)"
    )
    _quiet(pl)
    pl.set_defaults(func=cmd_pipeline)

    di = command("distill", help="distil a teacher (local or endpoint) into a student")
    add_config_flags(di, DistillConfig)
    di.add_argument(
        "--resume",
        metavar="OUT",
        help="continue a stopped distillation in OUT with its saved settings (the teacher's "
        "answers and an unchanged student are reused, an interrupted student SFT resumes)",
    )
    _quiet(di)
    di.set_defaults(func=cmd_distill)

    ex = command(
        "export",
        help="local formats: GGUF, GGUF + Ollama Modelfile, GPTQ; --check: what each costs",
    )
    ex.add_argument(
        "format",
        choices=["gguf", "ollama", "gptq", "check"],
        help="what to write (check: write none, evaluate --formats against the original)",
    )
    ex.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL_OR_RUN",
        help="hub id, model dir or run dir (default: the embedded model)",
    )
    ex.add_argument("--outtype", default="f16", help=" | ".join(OUTTYPES))
    ex.add_argument(
        "--out",
        default=None,
        help="gguf: a .gguf path or a directory (default .); ollama: a directory "
        "(default ./NAME-ollama)",
    )
    ex.add_argument("--name", default=None, help="model name in the file (default: from MODEL)")
    ex.add_argument("--template", **TEMPLATE_FLAG)
    gq = ex.add_argument_group("gptq")
    gq.add_argument("--bits", type=int, default=4, choices=GPTQ_BITS, help="weight bits")
    gq.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="input columns per scale; must divide the model's widths (default: the largest "
        "of 128, 64, 32 that does)",
    )
    gq.add_argument(
        "--calibration",
        metavar="FILE.jsonl",
        default=None,
        help="calibration rows (text, messages or question) (default: the model's training "
        "prompts in its own format)",
    )
    gq.add_argument("--samples", type=_at_least(1), default=128, help="calibration prompts")
    ck = ex.add_argument_group("check (held-out pass@1 of the export beside the original's)")
    ck.add_argument("--check", action="store_true", help="evaluate what was written")
    ck.add_argument(
        "--formats",
        default="all",
        help=f"for `export check`: all ({','.join(CHECK_ALL)}) or a list of "
        f"{', '.join(CHECK_FORMATS)}",
    )
    ck.add_argument("--problems", type=_at_least(1), default=100, help="held-out problems")
    ck.add_argument("--k", type=_at_least(1), default=4, help="samples per problem")
    ck.add_argument("--max-tokens", type=_at_least(1), default=256, help="tokens per sample")
    ck.add_argument(
        "--dataset",
        default=None,
        help="held-out problems from this dataset's test split (default: the one the model "
        "trained on, else mix)",
    )
    ck.add_argument("--check-out", metavar="FILE.json", default=None, help="also write the rows")
    ex.set_defaults(func=cmd_export)

    inf = command("info", help="parameters, context, and memory to run or train a model")
    inf.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL_OR_RUN_OR_GGUF",
        help="hub id, model dir, run dir or .gguf file (default: the embedded model)",
    )
    inf.add_argument(
        "--ctx",
        type=_at_least(1),
        default=None,
        help="context for the KV-cache estimate (default: min(model's, 4096))",
    )
    inf.add_argument(
        "--lora-rank", type=_at_least(1), default=16, help="rank for the LoRA estimate"
    )
    inf.add_argument("--json", action="store_true", help="print JSON (bytes)")
    inf.set_defaults(func=cmd_info)

    pt = command("pretrain", help="build a small base model on the procedural corpus")
    pt.add_argument("--preset", default="tiny", help=f"size: {' | '.join(PRESETS)}")
    pt.add_argument("--out", default=None, help="output directory (default: runs/pretrain-PRESET)")
    pt.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the model already in --out (without it an existing one is refused)",
    )
    pt.add_argument(
        "--steps", type=_at_least(1), default=None, help="training steps (default: the preset's)"
    )
    pt.add_argument(
        "--nan-policy",
        choices=("stop", "skip"),
        default="stop",
        help="a step with a non-finite loss or gradient norm is never applied; stop: end the "
        "run there; skip: go on (5 skipped steps in a row stop it)",
    )
    _quiet(pt)
    pt.set_defaults(func=cmd_pretrain)
    return p


def _say_once(line: str) -> None:
    """An error line on stderr, once per job: under torchrun the ranks that hit the same error
    show it once between them (the first to get there), and a rank that fails alone shows its
    own; they then exit together, with the same code (dist.report_once)."""

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # dist.launched(), before torch is loaded
        say(line)
        return
    from r1kit import dist  # optional: torch: a torchrun job has it loaded already

    dist.report_once(line, say)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader gone is then told apart below
        return code
    except BrokenPipeError:  # `r1kit keys list | head -1`: the reader left, nothing to tell
        # stdout to /dev/null: Python's flush at exit would raise (and print) the same again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as if killed by SIGPIPE, what a shell pipeline expects
    except R1kitError as err:
        _say_once(f"r1kit: {err.prefix}{err}")
        return err.exit_code
    except OSError as err:
        line = disk_error(err)  # full disk, read-only or no permission: the user's to fix
        if line is None:
            raise
        _say_once(f"r1kit: error: {line}")
        return R1kitError.exit_code  # the user's to fix, as every other refusal
    except KeyboardInterrupt:
        print("r1kit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
