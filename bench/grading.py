"""How fast the one grader (`r1kit/grading.py`) makes the accuracy reward, on a CPU.

The reward runs once per completion in training, so its cost per call matters. Completions:
  tasks_r1zero   held-out `mix` problems (arithmetic, linear equations, Countdown) answered right
                 in the R1-Zero format: the task checkers, numbers on the exact fast path
  math500_r1zero every MATH-500 answer inside `<answer>` (graded against itself): math-verify
  math500_chat   the same answers in a `\\boxed{}` after `</think>`
  math500_nobox  the same answers stated without a box ("The final answer is $...$."): the chat
                 fallback, math-verify extracting from free text
Each set is graded twice (the first pass also pays for imports and math-verify's caches); the
second pass is reported, in microseconds per call.

    python bench/grading.py [--data ../shared/data/math500.jsonl]  -> bench/results/grading.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

from r1kit.data.datasets import heldout
from r1kit.data.tasks import TASKS
from r1kit.rewards.rules import accuracy

OUT = Path(os.environ.get("R1KIT_BENCH_OUT", Path(__file__).parent / "results" / "grading.json"))
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"


def timed(cases: list[tuple[str, dict]]) -> dict:
    for text, ex in cases:  # warm-up pass
        accuracy(text, ex)
    t0 = time.perf_counter()
    right = sum(accuracy(text, ex) for text, ex in cases)
    dt = time.perf_counter() - t0
    return {"n": len(cases), "correct": int(right), "us_per_call": round(1e6 * dt / len(cases), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    golds = [json.loads(x)["answer"] for x in Path(args.data).read_text().splitlines() if x]
    tasks = []
    for ex in heldout("mix", 500):
        _, final = TASKS[ex["task"]].trace(ex, random.Random(0), "careful")
        tasks.append((f" work </think> <answer> {final} </answer>", {**ex, "template": "r1zero"}))

    def ex(g: str, template: str) -> dict:
        return {"question": "q", "answer": g, "template": template}

    sets = {
        "tasks_r1zero": tasks,
        "math500_r1zero": [(f" w </think> <answer>{g}</answer>", ex(g, "r1zero")) for g in golds],
        "math500_chat": [(f"w\n</think>\n\nSo $\\boxed{{{g}}}$.", ex(g, "chat")) for g in golds],
        "math500_nobox": [
            (f"w\n</think>\n\nThe final answer is ${g}$.", ex(g, "chat")) for g in golds
        ],
    }
    results = {name: timed(cases) for name, cases in sets.items()}
    report = {
        "what": "accuracy reward (r1kit.grading) per call, second pass, one thread",
        "command": "OMP_NUM_THREADS=1 python bench/grading.py",
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
