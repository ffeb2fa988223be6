"""Multi-rank jobs for the tests: `torchrun --standalone --nproc-per-node N ...` on CPU (gloo),
one thread per rank, this checkout first on the path (so the job runs the code under test, not
an installed copy), the hub offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env(pythonpath: str | Path = "") -> dict[str, str]:
    """A test job's environment: this checkout, then `pythonpath` (a plugin's folder), first."""
    path = os.pathsep.join(filter(None, [str(ROOT), str(pythonpath)]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def torchrun_cmd(n: int, *args: str | Path) -> list[str]:
    """`torchrun --standalone --nproc-per-node n ARGS` as a command line (for Popen)."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    return [*run, str(n), *map(str, args)]


def torchrun(
    n: int,
    *args: str | Path,
    ok: bool | None = True,
    pythonpath: str | Path = "",
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run `torchrun_cmd(n, *args)` to its end. `ok` True / False: assert that it exits 0 /
    non-zero (the output's tails in the message); None: the caller looks."""
    p = subprocess.run(
        torchrun_cmd(n, *args),
        env=env(pythonpath),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if ok is not None:
        assert (p.returncode == 0) == ok, tail(p)
    return p


def tail(p: subprocess.CompletedProcess) -> str:
    """The last 3,000 characters of a finished job's stdout and of its stderr."""
    return p.stdout[-3000:] + p.stderr[-3000:]
