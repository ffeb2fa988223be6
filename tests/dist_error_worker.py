"""A torchrun worker for tests/test_dist_errors.py: `r1kit` itself, with one rank's environment
bad, for an error that rank alone hits.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_error_worker.py \
        RANK ARGS...

Rank RANK runs with R1KIT_SHARE_GPUS=maybe (refused by dist.init on that rank alone, before the
process group forms: the other ranks wait for it there); every rank then runs `r1kit ARGS...`.
"""

from __future__ import annotations

import os
import sys

from r1kit.cli import main

if __name__ == "__main__":
    if os.environ["RANK"] == sys.argv[1]:
        os.environ["R1KIT_SHARE_GPUS"] = "maybe"
    sys.exit(main(sys.argv[2:]))
