"""Configs composed of typed parts: flags, help, aliases, bounds, config.json old and new, YAML
recipe keys, `pipeline --out`, and every flag the README mentions."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from r1kit import cli
from r1kit.config import (
    RECIPES,
    ZERO_PRESETS,
    DistillConfig,
    EvalConfig,
    SampleConfig,
    SFTConfig,
    ZeroConfig,
)
from r1kit.config.fields import JobConfig
from r1kit.config.flags import shown_default
from r1kit.errors import R1kitError
from r1kit.pipeline.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
JOBS = {
    "zero": ZeroConfig,
    "sft": SFTConfig,
    "sample": SampleConfig,
    "distill": DistillConfig,
    "eval": EvalConfig,
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = cli.build_parser()
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("command", list(_subparsers()))
def test_every_flag_has_help_with_its_default(command):
    """`r1kit COMMAND --help`: every flag says what it does and what it is by default."""
    parser = _subparsers()[command]
    text = parser.format_help()
    assert _options(parser)
    job = JOBS.get(command)
    for action in _options(parser):
        help_line = parser.formatter_class(prog="x")._expand_help(action)
        assert len(help_line) > len("(default: x)") + 5, (command, action.option_strings)
        assert "(default" in help_line or "default:" in help_line, (command, help_line)
        if job and action.dest in job.flat_fields():
            f = job.flat_fields()[action.dest]
            shown = f.meta.get("shown") or shown_default(f.default)
            assert help_line.endswith(f"(default: {shown})"), help_line
    assert "(default:" in text


def test_old_zero_help_counts():
    """Before: `zero --help` explained 8 of 48 flags; now all 48 (+ the alias and --help)."""
    z = _subparsers()["zero"]
    helped = [a for a in _options(z) if a.help and a.help.strip()]
    assert len(helped) == len(_options(z)) == len(ZeroConfig.flat_fields()) + 2  # resume, quiet


OLD_FLAGS = {  # every flag of the flat configs before the redesign (r1kit 9d66a2e)
    "zero": "model dataset eval_data template rewards out seed steps prompts_per_step group_size "
    "lr warmup_steps weight_decay max_grad_norm beta eps_low eps_high scale_rewards loss_agg mu "
    "micro_batch pack_tokens grad_checkpoint compile_update lora_rank lora_alpha lora_targets "
    "mask_truncated overlong_buffer dynamic_sampling max_refills tis_cap recipe preset "
    "temperature top_p max_new_tokens eval_problems eval_k eval_temperature eval_top_p "
    "save_every device dtype engine time_limit_s unsafe_exec",
    "sft": "model data split template max_examples out seed epochs lr min_lr_ratio warmup_ratio "
    "weight_decay max_grad_norm batch_size micro_batch pack_tokens max_len save_every "
    "eval_dataset eval_problems eval_k max_new_tokens device engine",
    "sample": "model dataset prompts k template temperature top_p max_new_tokens keep_per_prompt "
    "language min_language max_repeats max_paragraph_words max_code_lines unsafe_exec out seed "
    "device engine",
    "distill": "teacher teacher_model api_key student student_layers dataset prompts k "
    "temperature top_p max_tokens template concurrency retries price_prompt price_completion "
    "out seed epochs lr batch_size eval_problems eval_k device engine",
    "eval": "benchmark data question_field answer_field solution_field k temperature top_p "
    "max_tokens limit out base_url api_key model concurrency retries gold engine template seed "
    "grade_timeout tests_field entry_point_field unsafe_exec",
}


@pytest.mark.parametrize("command", list(OLD_FLAGS))
def test_old_flag_names_still_parse(command):
    parser = _subparsers()[command]
    known = {s for a in _options(parser) for s in a.option_strings}
    missing = [n for n in OLD_FLAGS[command].split() if "--" + n.replace("_", "-") not in known]
    assert not missing, missing


@pytest.mark.parametrize("command", list(JOBS))
def test_max_new_tokens_is_an_alias_of_max_tokens(command):
    cls = JOBS[command]
    args = ["x"] if command == "eval" else []
    for flag in ("--max-tokens", "--max-new-tokens"):
        ns = cli.build_parser().parse_args([command, *args, flag, "77"])
        cfg = cli.config_from_args(cls, ns)
        assert cfg.get("max_tokens") == 77 and cfg.get("max_new_tokens") == 77
    assert cls.of(max_new_tokens=5).get("max_tokens") == 5  # YAML / config.json key too


def test_flat_names_unique_and_round_trip():
    for cls in JOBS.values():
        flat = cls.flat_fields()
        cfg = cls()
        for i, name in enumerate(flat):  # a distinct value per field survives both dict forms
            v = cfg.get(name)
            if isinstance(v, bool):
                cfg.set(name, not v)
            elif isinstance(v, int | float):
                cfg.set(name, v + i + 1)
        assert cls.from_dict(cfg.to_dict()) == cfg
        assert cls.from_dict(cfg.to_flat()) == cfg
        assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        with pytest.raises(R1kitError, match="unknown config keys: nosuch"):
            cls.from_dict({"nosuch": 1})


def test_parts_are_shared_across_jobs():
    """The same part classes serve every job; only defaults differ."""
    assert (
        type(ZeroConfig().sampling) is type(SampleConfig().sampling) is type(EvalConfig().sampling)
    )
    assert type(SFTConfig().optim) is type(DistillConfig().optim)
    assert (SampleConfig().sampling.temperature, EvalConfig().sampling.max_tokens) == (0.7, 32768)
    for cls in JOBS.values():  # job-level fields are few; the rest sit in parts
        own = [f for f in fields(cls) if "part" not in f.metadata]
        assert len(own) <= 15, (cls.__name__, len(own))


BOUNDS = [
    (["zero", "--steps", "0"], "--steps must be >= 1"),
    (["zero", "--top-p", "1.5"], "--top-p must be > 0 and <= 1"),
    (["zero", "--temperature", "0"], "--temperature must be > 0 (GRPO compares"),
    (["zero", "--group-size", "1"], "--group-size must be >= 2 (advantages compare"),
    (["zero", "--loss-agg", "mean"], "--loss-agg must be sequence, token or constant"),
    (["zero", "--max-new-tokens", "0"], "--max-tokens must be >= 1"),
    (["zero", "--overlong-buffer", "500"], "--overlong-buffer must be between 0 and --max-tokens"),
    (["zero", "--eval-problems", "0"], "--eval-problems must be >= 1"),
    (["zero", "--lora-rank", "-1"], "--lora-rank must be >= 0"),
    (["sft", "--warmup-ratio", "1"], "--warmup-ratio must be >= 0 and < 1"),
    (["sft", "--epochs", "0"], "--epochs must be >= 1"),
    (["sft", "--template", "alpaca"], "--template must be r1zero or chat"),
    (["sft", "--engine", "vllm"], "--engine must be auto, paged or hf"),
    (["eval", "--engine", "vllm"], "--engine must be auto, paged or hf"),
    (["sample", "--min-language", "2"], "--min-language must be >= 0 and <= 1"),
    (["sample", "--temperature", "-1"], "--temperature must be >= 0 (0 is greedy)"),
    (["distill", "--epochs", "-1"], "--epochs must be >= 0"),
    (["distill", "--price-prompt", "-1"], "--price-prompt must be >= 0"),
    (["eval", "--k", "0"], "--k must be >= 1"),
    (["eval", "--grade-timeout", "0"], "--grade-timeout must be > 0"),
]


@pytest.mark.parametrize("argv, message", BOUNDS)
def test_bounds_are_one_line_errors(argv, message, capsys, tmp_path):
    """Checked before anything loads: `r1kit` prints one line and exits 2."""
    assert cli.main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"r1kit: error: {err.removeprefix('r1kit: error: ')}"
    assert "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_old_flat_config_json_resumes(tmp_path):
    """A run written before the redesign has a flat config.json; --resume reads it."""
    old = {**ZeroConfig().to_flat(), "lr": 3e-4, "eval_k": 2, "lora_rank": 4}
    old["max_new_tokens"] = old.pop("max_tokens")  # the name it had then
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = cli._saved_config(ZeroConfig, str(tmp_path), "zero")
    assert (cfg.optim.lr, cfg.eval.k, cfg.lora.rank, cfg.sampling.max_tokens) == (3e-4, 2, 4, 128)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))  # as written now: nested
    assert cli._saved_config(ZeroConfig, str(tmp_path), "zero") == cfg
    sft_old = {"lr": 2e-3, "max_new_tokens": 64, "batch_size": 8, "eval_k": 2, "out": "o"}
    s = SFTConfig.from_dict(sft_old)
    assert (s.optim.lr, s.max_tokens, s.optim.batch_size, s.eval.k, s.run.out) == (
        2e-3,
        64,
        8,
        2,
        "o",
    )


def test_resume_keeps_the_saved_fields_and_flags_override(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ZeroConfig.of(lr=3e-4, steps=5).to_flat()))
    ns = cli.build_parser().parse_args(["zero", "--resume", str(tmp_path), "--steps", "9"])
    base = cli._saved_config(ZeroConfig, ns.resume, "zero")
    cfg = cli.config_from_args(ZeroConfig, ns, base)
    assert (cfg.optim.lr, cfg.run.steps) == (3e-4, 9)


def test_presets_and_recipes_name_real_fields():
    for table in (RECIPES, ZERO_PRESETS):
        for fields_ in table.values():
            for k in fields_:
                assert k == "pretrain" or ZeroConfig.canonical(k), k


def test_yaml_recipe_keys_still_work(tmp_path):
    """Stage keys are flat names (old ones included); the bundled recipes load."""
    for name in ("r1_tiny", "r1_tiny_zh"):
        rec = load_recipe(ROOT / "r1kit" / "recipes" / f"{name}.yaml")
        for st in rec.stages:
            cls = {"sft": SFTConfig, "rl": ZeroConfig, "sample": SampleConfig}.get(st.kind)
            if cls:
                kw = {k: v for k, v in st.fields.items() if k != "general_share"}
                cls.of(**kw).validate()
    y = tmp_path / "r.yaml"
    y.write_text(
        "eval: {max_tokens: 64}\nstages:\n"
        "  - {kind: rl, max_new_tokens: 32, eval_k: 2, lora_rank: 2}\n"
        "  - {kind: sft, max_tokens: 16, warmup_ratio: 0.1}\n"
    )
    rec = load_recipe(y)
    rl = ZeroConfig.of(**rec.stages[0].fields)
    assert (rl.sampling.max_tokens, rl.eval.k, rl.lora.rank) == (32, 2, 2)
    assert SFTConfig.of(**rec.stages[1].fields).optim.warmup_ratio == 0.1
    y.write_text("stages:\n  - {kind: rl, max_new_tokenz: 32}\n")
    with pytest.raises(R1kitError, match=r"r.yaml:2: unknown field 'max_new_tokenz'"):
        load_recipe(y)


def test_pipeline_out_overrides_the_recipe(tmp_path, monkeypatch):
    """`r1kit pipeline RECIPE --out DIR` writes under DIR, not under the recipe's out."""
    from r1kit.pipeline import run as pipeline_run

    def stop(*a, **kw):  # the base model's evaluation, after heldout.jsonl is written in OUT
        raise R1kitError("stopped here")

    monkeypatch.setattr(pipeline_run, "evaluate_path", stop)
    y = tmp_path / "r.yaml"
    y.write_text(f"out: {tmp_path / 'recipe-out'}\nstages:\n  - {{kind: sft}}\n")
    assert cli.main(["pipeline", str(y), "--out", str(tmp_path / "flag-out"), "--quiet"]) == 2
    assert (tmp_path / "flag-out").is_dir() and not (tmp_path / "recipe-out").exists()
    assert cli.main(["pipeline", str(y), "--quiet"]) == 2
    assert (tmp_path / "recipe-out").is_dir()  # without --out: the recipe's


# flags of other programs the README shows beside r1kit's: torchrun's, bench/serve_load.py's
EXTERNAL = {"--nproc-per-node", "--nnodes", "--rdzv-id", "--rdzv-endpoint", "--rdzv-backend"}
EXTERNAL |= {"--levels", "--no-bare", "--no-multi-turn", "--engine-thread", "--ab"}
# prose that names one subcommand's flag in another's paragraph: (paragraph's, flag's)
CROSS = {("keys", "serve", "--no-auth")}  # the keys item: serve --no-auth is refused unless...


def _readme_mentions() -> list[tuple[list[str], str, str]]:
    """(subcommands, flag, context) for every --flag in the README: the nearest `r1kit SUB`
    before it in its code line, or in its prose paragraph / list item (then also every other
    subcommand the item names); [] when none comes before it. A flag after a nearer `bench/`,
    `torchrun` or `python` belongs to that program and is skipped."""
    text = (ROOT / "README.md").read_text()
    commands = set(_subparsers())
    out = []
    for block in re.split(r"\n\s*\n", text):
        code = "```" in block or block.startswith("    ")
        # a code block line by line; prose by list item ("- " at the start of a line)
        units = block.splitlines() if code else re.split(r"\n(?=- )", block)
        for unit in units:
            marks = [
                (m.start(), m.group(1) or "")
                for m in re.finditer(r"r1kit (\w+)|bench/|torchrun|python |pip ", unit)
            ]
            named = [n for _, n in marks if n in commands]
            for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", unit):
                before = [name for pos, name in marks if pos < m.start()]
                if before and before[-1] == "":
                    continue  # another program's flag
                subs = [before[-1]] if before and before[-1] in commands else []
                if subs and not code:
                    subs += named
                out.append((subs, m.group(0), unit[:160]))
    return out


def test_every_readme_flag_parses():
    """Each --flag in the README parses under the subcommand it is written after (in prose:
    under one its paragraph names; with none named, under some subcommand)."""
    subs = _subparsers()
    known = {c: {s for a in p._actions for s in a.option_strings} for c, p in subs.items()}
    anywhere = set().union(*known.values())
    mentions = _readme_mentions()
    assert len(mentions) > 100
    allowed = {(named, flag) for named, _, flag in CROSS}
    for named, owner, flag in CROSS:
        assert flag in known[owner] and flag not in known[named]
    bad = [
        (subs, flag, ctx)
        for subs, flag, ctx in mentions
        if flag not in EXTERNAL
        and flag not in (set().union(*(known[c] for c in subs)) if subs else anywhere)
        and not any((c, flag) in allowed for c in subs)
    ]
    assert not bad, bad


def test_job_configs_are_job_configs():
    for cls in JOBS.values():
        assert issubclass(cls, JobConfig)
        cls().validate()
