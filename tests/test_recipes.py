"""Algorithm recipes (grpo / dapo / dr_grpo), dynamic sampling, soft overlong punishment and the
truncated importance weight, through the real zero job on the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from r1kit.config import RECIPES, ZeroConfig, apply_recipe
from r1kit.errors import R1kitError


def test_recipes_set_their_fields_and_explicit_flags_win():
    cfg = apply_recipe(ZeroConfig.of(max_new_tokens=100), "dapo", explicit=set())
    a = cfg.algo
    assert (a.loss_agg, a.eps_high, a.dynamic_sampling, a.beta) == ("token", 0.28, True, 0)
    assert cfg.algo.overlong_buffer == 20  # derived: the last fifth of the budget
    cfg = apply_recipe(ZeroConfig.of(eps_high=0.3), "dapo", explicit={"eps_high"})
    assert cfg.algo.eps_high == 0.3
    cfg = apply_recipe(ZeroConfig(), "dr_grpo", explicit=set())
    assert (cfg.algo.loss_agg, cfg.algo.scale_rewards, cfg.algo.beta) == ("constant", "none", 0.0)
    cfg = apply_recipe(ZeroConfig(), "grpo", explicit=set())
    assert (cfg.algo.loss_agg, cfg.algo.beta) == ("sequence", 0.04)
    for name in RECIPES:
        apply_recipe(ZeroConfig(), name, set()).validate()
    with pytest.raises(R1kitError, match="unknown recipe"):
        apply_recipe(ZeroConfig(), "ppo", set())


def _zero(tmp_path, *flags):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "r1kit.cli", "zero", "--out", str(out), "--quiet"]
    cmd += ["--steps", "2", "--prompts-per-step", "4", "--group-size", "4", "--eval-problems", "2"]
    cmd += ["--eval-k", "1", "--max-new-tokens", "24", "--dataset", "arith", *flags]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return cfg, rows


def test_dapo_recipe_runs_with_dynamic_sampling(tmp_path):
    cfg, rows = _zero(tmp_path, "--recipe", "dapo", "--tis-cap", "2")
    algo = cfg["algo"]  # config.json is nested by part
    assert cfg["recipe"] == "dapo" and algo["dynamic_sampling"] and algo["overlong_buffer"] == 4
    assert len(rows) == 2
    for r in rows:
        assert r["dropped_groups"] >= 0
        # all 24-token completions that hit the cap get the full -1 punishment in the reward
        assert r["reward"] >= -1.0 - 1.5


def test_bad_recipe_is_one_line_error(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "r1kit.cli", "zero", "--recipe", "ppo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert (
        p.stderr.strip().startswith("r1kit: error: unknown recipe") and "\n" not in p.stderr.strip()
    )


def test_dynamic_sampling_drops_flat_groups_and_refills(tiny_model_base, tiny_tokenizer):
    """Groups of prompts marked flat get reward 0 for every sample and are dropped; others get
    the completion length (which varies across samples) and are kept; the batch is refilled."""
    from r1kit.engine import SamplingParams, make_engine
    from r1kit.rewards import base
    from r1kit.rl.collect import collect

    base.REGISTRY["_test_len_unless_flat"] = lambda c, ex: 0.0 if ex["flat"] else float(len(c))
    try:
        reward = base.WeightedReward({"_test_len_unless_flat": 1.0})
        flags = [True, False, True, True, False, False, False, True, False, False]
        stream = iter(
            {"question": f"Compute {i} + 1.", "answer": str(i + 1), "flat": f}
            for i, f in enumerate(flags)
        )
        cfg = ZeroConfig.of(prompts_per_step=3, group_size=4, dynamic_sampling=True, max_refills=4)
        engine = make_engine(tiny_model_base, tiny_tokenizer.pad_token_id)
        params = SamplingParams(n=4, temperature=1.0, max_tokens=16, seed=1)
        rollouts, used, dropped = collect(
            engine, tiny_tokenizer, stream, cfg.template, cfg.algo, params, reward
        )
        assert len(rollouts) == 12
        assert all(not r.example["flat"] for r in rollouts)
        # round 1 takes 3 prompts (2 flat), round 2 takes 2 (1 flat), round 3 takes 1: 6 used
        assert (used, dropped) == (6, 3)
        off = ZeroConfig.of(prompts_per_step=3, group_size=4)
        stream = iter({"question": "q", "answer": "1", "flat": True} for _ in range(3))
        rollouts, used, dropped = collect(
            engine, tiny_tokenizer, stream, off.template, off.algo, params, reward
        )
        assert (len(rollouts), used, dropped) == (12, 3, 0)
    finally:
        del base.REGISTRY["_test_len_unless_flat"]


def test_gpu_small_preset_fields_and_base():
    from r1kit.config import ZERO_PRESETS, apply_preset
    from r1kit.pretrain.train import PRESETS

    cfg = ZeroConfig()
    assert apply_preset(cfg, "gpu-small", explicit={"steps"}) == "gpu-small"
    assert (
        cfg.run.device == "cuda" and cfg.algo.prompts_per_step == 64 and cfg.run.steps == 70
    )  # explicit
    cfg.validate()
    assert PRESETS["gpu-small"].device == "cuda" and "gpu-small" in ZERO_PRESETS
    given = ZeroConfig.of(model="some/dir")
    assert apply_preset(given, "gpu-small", set()) is None  # --model given: no pretraining
    assert apply_preset(ZeroConfig(), "none", set()) is None
    with pytest.raises(R1kitError, match="unknown preset"):
        apply_preset(ZeroConfig(), "huge", set())


def test_gpu_code_preset_trains_on_code_with_the_sandboxed_reward():
    from r1kit.config import apply_preset
    from r1kit.pretrain.train import PRESETS

    cfg = ZeroConfig()
    assert apply_preset(cfg, "gpu-code", set()) == "gpu-code"
    assert cfg.dataset == "code" and cfg.rewards == "code=1,format=0.5"
    cfg.validate()
    assert PRESETS["gpu-code"].tasks == ("code",) and PRESETS["gpu-code"].device == "cuda"


def test_bad_preset_is_one_line_error(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "r1kit.cli", "zero", "--preset", "huge", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "r1kit: error: unknown preset 'huge'; available: gpu-small, gpu-code, none"
    )
