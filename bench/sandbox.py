"""Sandbox throughput: executions per second of a trivial program with 3 asserts.

    python bench/sandbox.py [--runs 400] [--workers N] [--out bench/results/sandbox.json]

Each execution is a whole sandboxed run as the code reward does it (new namespaces, the
harness, the program, its 3 tests, the clean-up), through the worker pool (`run_many`), for
every backend that works here, and for the unprotected `none` backend (--unsafe-exec) as the
floor the isolation costs against. The issue's target: >= 20/s on the 2-core CPU. On a shared
machine the rate depends on the load, so the CPU time one execution costs is measured too (ours
plus every reaped sandbox process), and with it the rate the cores would give if they were free.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

from r1kit.sandbox import Sandbox, available

PROGRAM = "def f(x):\n    return x * 2\n"
TESTS = ["assert f(1) == 2", "assert f(2) == 4", "assert f(-3) == -6"]


def _cpu() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(backend: str, runs: int, workers: int) -> dict:
    with Sandbox(backend=backend, unsafe=backend == "none", workers=workers) as sb:
        sb.run_many([(PROGRAM, TESTS)] * workers)  # warm: pool threads, page cache
        cpu0 = _cpu()
        t0 = time.perf_counter()
        results = sb.run_many([(PROGRAM, TESTS)] * runs)
        wall = time.perf_counter() - t0
        cpu = (_cpu() - cpu0) / runs
    assert all(r.all_passed for r in results), [r for r in results if not r.all_passed][:1]
    per = sorted(r.wall_s for r in results)
    return {
        "backend": backend,
        "runs": runs,
        "workers": workers,
        "wall_s": round(wall, 3),
        "executions_per_s": round(runs / wall, 1),
        # CPU seconds one execution costs (host side + the sandboxed processes, all reaped):
        # what the machine could do with every core free, whatever else runs on it now
        "cpu_s_per_execution": round(cpu, 4),
        "executions_per_s_all_cores_free": round((os.cpu_count() or 1) / cpu, 1),
        "latency_p50_s": per[len(per) // 2],
        "latency_p90_s": per[int(len(per) * 0.9)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="bench/results/sandbox.json")
    args = ap.parse_args()
    rows = [measure(b, args.runs, args.workers) for b in (*available(), "none")]
    for r in rows:
        print(
            f"{r['backend']:8s} {r['executions_per_s']:7.1f} executions/s  "
            f"(p50 {r['latency_p50_s'] * 1000:.0f} ms, {r['workers']} workers; "
            f"{r['cpu_s_per_execution'] * 1000:.0f} ms CPU each: "
            f"{r['executions_per_s_all_cores_free']:.0f}/s with the cores free)"
        )
    load = os.getloadavg()[0]
    out = {
        "what": "sandboxed executions per second, trivial program + 3 asserts, worker pool",
        "cpus": os.cpu_count(),
        "load_avg_1min_at_end": round(load, 2),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "target_executions_per_s": 20,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
