"""Distillation vs RL for a small student, on the embedded default (R1 paper, section 4.1, at
toy scale).

    OMP_NUM_THREADS=2 python bench/distill_cpu.py [--teacher runs/pipeline/06-all_scenario_rl/final]

The teacher is a trained model (default: the final model of the bundled `r1kit pipeline
r1_tiny`, the role R1 plays in the paper). The student is a smaller base pretrained on the same
corpus (`r1kit pretrain --preset tiny-student`: 2 layers instead of 4, half the tokens; built
first when missing, its pretraining time is not counted below). (a) distil: the teacher answers
train prompts, verified + filtered traces fine-tune the student; (b) RL alone: the same student
trained by `r1kit zero` for the same wall time as all of (a). Held-out pass@1 of both, same
problems and seed, into bench/results/distill_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from r1kit.config import DistillConfig, ZeroConfig
from r1kit.pipeline.distill import print_distill, run_distill
from r1kit.rl.zero import run_zero


def params(path: str) -> int:
    from r1kit.modeling import load_model

    return sum(p.numel() for p in load_model(path).parameters())


def student_base(path: str) -> dict:
    """The pretrained small student (built once); its pretraining summary."""
    from dataclasses import replace

    from r1kit.pretrain.train import PRESETS, pretrain

    summary = Path(path) / "pretrain.json"
    if not summary.exists():
        pretrain(replace(PRESETS["tiny-student"], out=path))
    return json.loads(summary.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="runs/pipeline/06-all_scenario_rl/final")
    ap.add_argument("--student", default="runs/pretrain-tiny-student")
    ap.add_argument("--prompts", type=int, default=2400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="runs/distill-bench")
    ap.add_argument("--result", default="bench/results/distill_cpu.json")
    args = ap.parse_args()
    out = Path(args.out)
    pre = student_base(args.student)
    load0 = round(os.getloadavg()[0], 2)
    t0 = time.time()
    cfg = DistillConfig.of(
        teacher=args.teacher,
        student=args.student,
        prompts=args.prompts,
        k=4,
        max_tokens=128,
        epochs=args.epochs,
        lr=2e-3,
        out=str(out / "distill"),
    )
    d = run_distill(cfg)
    print_distill(d, cfg.run.out)
    wall = time.time() - t0
    rl = run_zero(
        ZeroConfig.of(
            model=args.student,
            out=str(out / "rl"),
            steps=100_000,
            time_limit_s=wall,
            save_every=1000,
        )
    )
    st = d["student"]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "OMP_NUM_THREADS=2 python bench/distill_cpu.py " + " ".join(sys.argv[1:]),
        "load_avg_start_end": [load0, round(os.getloadavg()[0], 2)],
        "teacher": {"path": args.teacher, "params": params(args.teacher)},
        "student": {
            "path": args.student,
            "params": params(args.student),
            "layers": pre["config"]["layers"],
            "pretrain_tokens": pre["tokens"],
            "pretrain_wall_s": pre["wall_s"],
        },
        "eval": "100 held-out mix problems x 4 samples, T=0.6, top-p 0.95, seed 1",
        "teacher_answers": d["answers"],
        "traces_kept": d["kept"],
        "removed": d["removed"],
        "usage": d["usage"],
        "distill": {
            "wall_s": round(wall, 1),
            "start_pass1": st["base_pass1"],
            "final_pass1": st["final_pass1"],
            "gain": round(st["final_pass1"] - st["base_pass1"], 4),
            "sft_steps": st["steps"],
        },
        "rl_alone": {
            "wall_s": rl["wall_s"],
            "steps": rl["steps"],
            "start_pass1": rl["base_pass1"],
            "final_pass1": rl["final_pass1"],
            "gain": round(rl["final_pass1"] - rl["base_pass1"], 4),
        },
    }
    Path(args.result).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("distill", "rl_alone")}, indent=2))


if __name__ == "__main__":
    main()
