"""The bundled R1 recipe end to end on the embedded model, against the R1-Zero model.

    OMP_NUM_THREADS=2 python bench/pipeline_cpu.py [--zero runs/zero]
    OMP_NUM_THREADS=2 python bench/pipeline_cpu.py --recipe r1kit/recipes/r1_tiny_zh.yaml \
        --zero runs/zero-zh --result bench/results/pipeline_zh_cpu.json

Runs `r1kit pipeline RECIPE` (timed), evaluates the R1-Zero model (a `r1kit zero` run dir with
default settings on the recipe's eval dataset and generation length; trained first when
missing) on the same held-out problems with the same seed, and writes the result JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from r1kit.pipeline.recipe import load_recipe
from r1kit.pipeline.run import _eval_kw, run_pipeline
from r1kit.sampling.heldout import evaluate_path

KEYS = (
    "pass1",
    "passk",
    "format_rate",
    "language_consistency",
    "language_mixing_rate",
    "malformed_rate",
    "no_final_answer_rate",
    "over_length_rate",
    "repetition_rate",
    "mean_length",
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zero", default="runs/zero", help="an R1-Zero run dir (default settings)")
    ap.add_argument("--recipe", default=str(Path("r1kit/recipes/r1_tiny.yaml")))
    ap.add_argument("--result", default="bench/results/pipeline_cpu.json")
    args = ap.parse_args()
    rec = load_recipe(args.recipe)
    load0 = round(os.getloadavg()[0], 2)
    t0 = time.time()
    summary = run_pipeline(args.recipe)
    wall = time.time() - t0
    ev = _eval_kw(rec)
    if not (Path(args.zero) / "final").exists():
        from r1kit.config import ZeroConfig
        from r1kit.rl.zero import run_zero

        zt0 = time.time()
        run_zero(
            ZeroConfig.of(
                out=args.zero,
                dataset=rec.eval.get("dataset", "mix"),
                max_new_tokens=ev["max_new_tokens"],
            )
        )
        print(f"R1-Zero run: {time.time() - zt0:.0f}s")
    out = Path(json.loads(json.dumps(summary))["final_model"]).parents[1]
    problems = [json.loads(x) for x in (out / "heldout.jsonl").read_text().splitlines()]
    zero = evaluate_path(args.zero, problems, **ev)
    stages = {r["stage"]: {k: r["eval"][k] for k in KEYS} for r in summary["stages"] if r["eval"]}
    final = stages[summary["stages"][-1]["stage"]]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        # other jobs on the machine slow every stage: 1-min load average at start and end
        "load_avg_start_end": [load0, round(os.getloadavg()[0], 2)],
        "command": "OMP_NUM_THREADS=2 python bench/pipeline_cpu.py " + " ".join(sys.argv[1:]),
        "recipe": args.recipe,
        "pipeline_wall_s": round(wall, 1),
        "stage_wall_s": {r["stage"]: r["wall_s"] for r in summary["stages"]},
        "stages": stages,
        "r1_zero": {"run": args.zero, **{k: zero[k] for k in KEYS}},
        "final_vs_zero": {
            "pass1": [final["pass1"], zero["pass1"]],
            "malformed_rate": [final["malformed_rate"], zero["malformed_rate"]],
            "language_mixing_rate": [final["language_mixing_rate"], zero["language_mixing_rate"]],
        },
    }
    Path(args.result).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["final_vs_zero"], indent=2), f"\npipeline wall {wall:.0f}s")


if __name__ == "__main__":
    main()
