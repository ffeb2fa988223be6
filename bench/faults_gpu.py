"""Issue 18's guarantees on a GPU: real `r1kit zero` runs on CUDA, and what the checks cost.

    python bench/faults_gpu.py                  # -> bench/results/faults_gpu.json

Runs (the embedded model on CUDA, bf16 weights, the paged engine):
  straight   an uninterrupted run of STEPS steps
  sigterm    the same run, SIGTERM once step 2's checkpoint exists: exit code, the line, the step
             it stopped at; then --resume to the end: whether final/ equals straight's (bitwise
             and the largest difference: CUDA kernels need not repeat bit for bit)
  nan        --lr 1e3: exit code, the line, and whether every safetensors file written is finite
Costs on the 0.5B shape (bench/shapes.py) in bf16 on the GPU:
  weights_check_ms   train/finite.all_finite over every parameter (the per-step weights check)
  manifest_s         manifest.write_manifest of a saved 0.5B checkpoint (sha256 of ~1 GB + fsync)
  verify_s           manifest.check(full=True) of it (what --resume pays per checkpoint tried)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from shapes import SHAPES  # bench/shapes.py, beside this script
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit import manifest
from r1kit.train.finite import all_finite

OUT = Path(__file__).parent / "results" / "faults_gpu.json"
STEPS = 6
FLAGS = [
    "--quiet",
    "--device",
    "cuda",
    "--dataset",
    "arith",
    "--steps",
    str(STEPS),
    "--prompts-per-step",
    "8",
    "--group-size",
    "8",
    "--eval-problems",
    "16",
    "--eval-k",
    "1",
    "--save-every",
    "1",
]
CMD = [sys.executable, "-m", "r1kit.cli", "zero"]


def zero(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=600)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def compare(a: Path, b: Path) -> dict:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    return {"bitwise_equal": all(torch.equal(wa[k], wb[k]) for k in wa), "max_abs_diff": diff}


def runs(tmp: Path) -> dict:
    res: dict = {}
    t = time.time()
    p = zero("--out", str(tmp / "straight"), *FLAGS)
    res["straight"] = {"rc": p.returncode, "wall_s": round(time.time() - t, 1)}
    if p.returncode:
        res["straight"]["stderr"] = p.stderr[-2000:]
        return res

    out = tmp / "sigterm"
    proc = subprocess.Popen([*CMD, "--out", str(out), *FLAGS], stderr=subprocess.PIPE, text=True)
    while not (out / "checkpoints" / "step-000002").exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    res["sigterm"] = {"rc": proc.returncode, "line": last_line(err), "stopped_at": latest}
    p = zero("--resume", str(out), "--quiet")
    res["sigterm"]["resume_rc"] = p.returncode
    if p.returncode == 0:
        res["sigterm"]["vs_straight"] = compare(tmp / "straight" / "final", out / "final")
    else:
        res["sigterm"]["resume_stderr"] = p.stderr[-2000:]

    out = tmp / "nan"
    p = zero("--out", str(out), *FLAGS, "--lr", "1e3")
    written = sorted(out.rglob("*.safetensors"))
    finite = all(all_finite(load_file(f).values()) for f in written)
    res["nan"] = {
        "rc": p.returncode,
        "line": last_line(p.stderr),
        "safetensors_written": len(written),
        "all_finite": finite,
        "final_exists": (out / "final").exists(),
    }
    return res


def costs(tmp: Path) -> dict:
    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPES["0.5B"])
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    params = list(model.parameters())
    for _ in range(3):
        all_finite(params)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        all_finite(params)
    check_ms = (time.perf_counter() - t) / 20 * 1e3
    ck = tmp / "ck"
    model.save_pretrained(ck)
    t = time.perf_counter()
    manifest.write_manifest(ck)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    problem = manifest.check(ck, full=True)
    verify_s = time.perf_counter() - t
    size = sum(f.stat().st_size for f in ck.rglob("*") if f.is_file())
    return {
        "params": sum(p.numel() for p in params),
        "weights_check_ms": round(check_ms, 3),
        "checkpoint_bytes": size,
        "manifest_s": round(write_s, 3),
        "verify_s": round(verify_s, 3),
        "verify_problem": problem,
    }


def main() -> None:
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as d:
        res["costs_0.5B"] = costs(Path(d))
        print(json.dumps(res["costs_0.5B"]), flush=True)
        res.update(runs(Path(d)))
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
