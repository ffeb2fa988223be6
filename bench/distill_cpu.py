"""Distillation vs RL for a small student, on the embedded default (R1 paper, section 4.1, at
toy scale).

    OMP_NUM_THREADS=2 python bench/distill_cpu.py [--teacher runs/zero]

The teacher is a trained run (default: the R1-Zero model of `r1kit zero`); the student is the
embedded base cut to 2 of its 4 layers (half the parameters). (a) distil: the teacher answers
train prompts, verified + filtered traces fine-tune the student; (b) RL alone: the same student
trained by `r1kit zero` for the same wall time. Held-out pass@1 of both, same problems and
seed, into bench/results/distill_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from r1kit.config import DistillConfig, ZeroConfig
from r1kit.pipeline.distill import print_distill, run_distill
from r1kit.rl.zero import run_zero


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="runs/zero")
    ap.add_argument("--out", default="runs/distill-bench")
    ap.add_argument("--result", default="bench/results/distill_cpu.json")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    cfg = DistillConfig(teacher=args.teacher, student_layers="0,3", prompts=400, k=4,
                        max_tokens=128, epochs=3, lr=2e-3, out=str(out / "distill"))  # fmt: skip
    d = run_distill(cfg)
    print_distill(d, cfg.out)
    wall = time.time() - t0
    rl = run_zero(ZeroConfig(model=str(out / "distill" / "student-init"), out=str(out / "rl"),
                             steps=100_000, time_limit_s=wall, save_every=1000))  # fmt: skip
    st = d["student"]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "OMP_NUM_THREADS=2 python bench/distill_cpu.py",
        "teacher": args.teacher,
        "student": d["student_init"],
        "eval": "100 held-out mix problems x 4 samples, T=0.6, top-p 0.95, seed 1",
        "teacher_answers": d["answers"],
        "traces_kept": d["kept"],
        "removed": d["removed"],
        "usage": d["usage"],
        "distill": {"wall_s": round(wall, 1), "start_pass1": st["base_pass1"],
                    "final_pass1": st["final_pass1"],
                    "gain": round(st["final_pass1"] - st["base_pass1"], 4),
                    "sft_steps": st["steps"]},
        "rl_alone": {"wall_s": rl["wall_s"], "steps": rl["steps"],
                     "start_pass1": rl["base_pass1"], "final_pass1": rl["final_pass1"],
                     "gain": round(rl["final_pass1"] - rl["base_pass1"], 4)},
    }  # fmt: skip
    Path(args.result).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("distill", "rl_alone")}, indent=2))


if __name__ == "__main__":
    main()
