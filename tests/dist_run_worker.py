"""A torchrun worker for tests/test_faults_run.py: the run skeleton's lifecycle on 2 gloo ranks.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_run_worker.py OUT

Every rank writes OUT.rank-R.json with what it saw: "refused" (a second Run on the held OUT:
the line each rank raised), "stopping" and "terminated" (SIGTERM delivered to rank 1 alone:
whether each rank's stopping() agreed and took it as a SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import sys

from r1kit import dist
from r1kit.errors import R1kitError
from r1kit.train.run import Run


def main(out: str) -> None:
    dist.init("cpu")
    seen = {}
    with Run(out, "test", progress=False) as run:
        try:  # OUT is held by this run (rank 0's lock): a second one is refused on every rank
            Run(out, "test", progress=False)
            seen["refused"] = None
        except R1kitError as err:
            seen["refused"] = str(err)
        if dist.rank() == 1:  # a scheduler's SIGTERM that reached one rank only
            os.kill(os.getpid(), signal.SIGTERM)
        seen["stopping"] = run.stopping()
        seen["terminated"] = run.terminated
    with open(f"{out}.rank-{dist.rank()}.json", "w") as f:
        json.dump(seen, f)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
