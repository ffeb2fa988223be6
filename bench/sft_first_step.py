"""How long `r1kit sft` takes to reach its first optimizer step on a large data file, and the
most memory it holds by then.

    OMP_NUM_THREADS=1 python bench/sft_first_step.py [--lines 200000] [--label after]

The data file is made here: `--lines` worked traces of the procedural tasks (r1kit/sft/data.py
`trace_rows`) as TRL prompt/completion rows, about 180 bytes a line (36 MB for 200,000 lines).
`r1kit sft` runs on it in a subprocess on the embedded model; the clock stops when the first
metrics row is on disk (the first optimizer step has finished), and the peak resident memory
(VmHWM) of the process is read just before it is killed. The result is merged under `--label`
into bench/results/sft_first_step.json, so the numbers before and after a change sit side by side.
"Before" runs the same script from an export of the older tree: `git archive COMMIT | tar -x -C
OLD; cd OLD; PYTHONPATH=OLD python /path/to/bench/sft_first_step.py --label before` (the CLI runs
from the current directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from r1kit.sft.data import trace_rows

RESULT = Path(__file__).parent / "results" / "sft_first_step.json"


def make_file(path: Path, lines: int) -> None:
    with path.open("w") as f:
        for c in trace_rows("mix", lines, seed=0):
            row = {"prompt": c.messages[0]["content"], "completion": c.messages[1]["content"]}
            f.write(json.dumps(row) + "\n")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_step(data: Path, out: Path) -> dict:
    """Seconds from launch to the first metrics row, and the peak RSS by then."""
    cmd = [sys.executable, "-m", "r1kit.cli", "sft", "--data", str(data), "--out", str(out)]
    cmd += ["--eval-problems", "0", "--batch-size", "32", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    peak = 0.0
    try:
        while not (metrics.exists() and metrics.read_text().strip()):
            if proc.poll() is not None:
                raise SystemExit(f"sft ended before its first step: {proc.stderr.read()[-800:]}")
            peak = max(peak, peak_rss_mib(proc.pid))
            time.sleep(0.05)
        seconds = time.time() - t0
        peak = max(peak, peak_rss_mib(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    return {"first_step_s": round(seconds, 2), "peak_rss_mib": round(peak, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--label", default="now")
    ap.add_argument("--data", help="an existing file instead of a generated one")
    args = ap.parse_args()
    load = os.getloadavg()[0]  # the machine is shared: the load the numbers were taken under
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "sft.jsonl"
        if not args.data:
            make_file(data, args.lines)
        small = Path(tmp) / "small.jsonl"  # the same rows, 100 of them: the fixed start-up cost
        with data.open() as src, small.open("w") as dst:
            dst.writelines(line for _, line in zip(range(100), src))
        run = first_step(data, Path(tmp) / "run")
        base = first_step(small, Path(tmp) / "run-small")
        lines = sum(1 for _ in data.open("rb"))
        mib = data.stat().st_size / 2**20
    result = {
        "lines": lines,
        "file_mib": round(mib, 1),
        **run,
        "first_step_s_100_lines": base["first_step_s"],
        "peak_rss_mib_100_lines": base["peak_rss_mib"],
        "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],  # before, after
    }
    print(json.dumps(result))
    old = json.loads(RESULT.read_text()) if RESULT.exists() else {"results": {}}
    old.update(
        what="r1kit sft: launch to the first optimizer step on a large prompt/completion file, "
        "and the peak RSS by then; the same with the file's first 100 lines (fixed start-up)",
        command=f"OMP_NUM_THREADS=1 python bench/sft_first_step.py --lines {args.lines} "
        f"--label {args.label}",
        cpu=platform.machine(),
        date=str(date.today()),
    )
    old["results"][args.label] = result
    RESULT.write_text(json.dumps(old, indent=2) + "\n")


if __name__ == "__main__":
    main()
