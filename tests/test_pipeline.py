"""`r1kit pipeline`: recipe checking with line numbers, the stages end to end at toy size,
skipping complete stages and re-running one alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1kit.chat import CHAT_TEMPLATE
from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.modeling import load_tokenizer
from r1kit.pipeline.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = """\
out: {out}
eval: {{dataset: arith, problems: 6, k: 2, max_new_tokens: 80}}
stages:
  - {{name: cold_start, kind: sft, data: "traces:arith", max_examples: 384, batch_size: 16,
      epochs: 3, lr: 3.0e-3}}
  - name: reasoning_rl
    kind: rl
    rewards: "accuracy=1,format=0.5,language=0.5"
    dataset: arith
    steps: 2
    prompts_per_step: 4
    group_size: 4
    max_new_tokens: 80
  - {{name: rejection_sampling, kind: sample, dataset: arith, prompts: 24, k: 4,
      max_new_tokens: 80}}
  - {{name: sft, kind: sft, model: base, data: "@rejection_sampling", batch_size: 16}}
  - {{name: reward_model, kind: reward_model, model: base, data: "@rejection_sampling",
      epochs: 1}}
  - name: all_scenario_rl
    kind: rl
    rewards: "accuracy=1,format=0.5,language=0.5,reward_model@reward_model=0.5"
    general_share: 0.5
    dataset: arith
    steps: 2
    prompts_per_step: 4
    group_size: 4
    max_new_tokens: 80
"""


def test_recipe_errors_name_the_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("out: x\nstages:\n  - name: a\n    kind: sft\n  - name: b\n    kind: dpo\n")
    with pytest.raises(R1kitError, match=r"r\.yaml:6: unknown stage kind 'dpo'"):
        load_recipe(p)
    p.write_text("stages:\n  - name: a\n    kind: rl\n    stepz: 3\n")
    with pytest.raises(R1kitError, match=r"r\.yaml:4: unknown field 'stepz' for a rl stage"):
        load_recipe(p)
    p.write_text("stages:\n  - {name: a, kind: sft, data: '@nope'}\n")
    with pytest.raises(R1kitError, match=r"r\.yaml:2: data '@nope' names no earlier stage"):
        load_recipe(p)
    # values are checked when the recipe loads, not when their stage starts
    p.write_text("stages:\n  - {name: a, kind: sft}\n  - {name: b, kind: rl, steps: 0}\n")
    with pytest.raises(R1kitError, match=r"r\.yaml:3: stage 'b': --steps must be >= 1"):
        load_recipe(p)
    p.write_text("stages:\n  - {name: a, kind: sft, epochs: 0}\n")
    with pytest.raises(R1kitError, match=r"r\.yaml:2: stage 'a': --epochs must be >= 1"):
        load_recipe(p)
    p.write_text("outt: x\nstages: []\n")
    assert main(["pipeline", str(p)]) == 2


@pytest.mark.parametrize("name", ["r1_tiny", "r1_tiny_zh"])
def test_bundled_recipes_parse(name):
    rec = load_recipe(Path(__file__).parents[1] / "r1kit" / "recipes" / f"{name}.yaml")
    assert [s.kind for s in rec.stages] == ["sft", "rl", "sample", "sft", "reward_model", "rl"]
    if name.endswith("_zh"):  # every stage that draws prompts draws the Chinese ones
        assert rec.eval["dataset"] == "mix@zh"
        assert all(s.fields.get("dataset", "mix@zh") == "mix@zh" for s in rec.stages)


def test_pipeline_end_to_end_skip_and_rerun(tmp_path, capsys):
    out = tmp_path / "run"
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(TOY.format(out=out))
    assert main(["pipeline", str(recipe)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    names = [r["stage"] for r in summary["stages"]]
    assert names == [
        "base",
        "cold_start",
        "reasoning_rl",
        "rejection_sampling",
        "sft",
        "reward_model",
        "all_scenario_rl",
    ]
    for r in summary["stages"]:
        assert (r["eval"] is not None) == (r["kind"] in ("-", "sft", "rl"))
    assert summary["final_model"].endswith("06-all_scenario_rl/final")
    # R1 ends in a chat model: it carries the chat template, and learned its format early on
    final = Path(summary["final_model"])
    assert json.loads((final / "r1kit.json").read_text()) == {"template": "chat"}
    assert load_tokenizer(str(final)).chat_template == CHAT_TEMPLATE
    cold = next(r for r in summary["stages"] if r["stage"] == "cold_start")
    assert cold["eval"]["format_rate"] > 0.5  # reasoning in <think>, then a \boxed{} answer
    train = [json.loads(x) for x in (out / "data" / "06-all_scenario_rl.train.jsonl").open()]
    assert {tuple(r["rewards"]) for r in train} == {
        ("reward_model", "format", "language"),
        ("accuracy", "format", "language"),
    }
    info = json.loads((out / "04-sft" / "stage.json").read_text())
    assert info["model_in"] is None  # SFT of the base, not of the RL model
    assert (out / "report.md").exists() and (out / "report.png").exists()
    assert "pass@1" in capsys.readouterr().out
    # complete stages are skipped; --only re-runs one stage from the previous outputs
    mtimes = {p: p.stat().st_mtime for p in out.glob("*/stage.json")}
    assert main(["pipeline", str(recipe), "--only", "rejection_sampling"]) == 0
    changed = {p.parent.name for p in mtimes if p.stat().st_mtime != mtimes[p]}
    assert changed == {"03-rejection_sampling"}
    assert "reused: config and inputs unchanged" in capsys.readouterr().out
    assert main(["pipeline", str(recipe), "--only", "nope"]) == 2
