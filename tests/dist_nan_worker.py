"""A torchrun worker for tests/test_faults_nan.py: the non-finite guard on 2 gloo ranks, the
embedded model FSDP2-sharded on CPU.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_nan_worker.py \
        JOB.pt OUTDIR

JOB.pt holds {"pad_id": int, "rows": [Encoded]}. Every rank writes OUTDIR/rank-R.json with what
it saw: "skip" (rank 1 alone has a NaN loss: the verdict of check() under skip on this rank),
"stop" (the same under stop: the error line), "weights" (rank 1 alone holds a NaN in its shard:
check_weights' error line), "save" (require_finite's error line), "lr" (two SFT steps at lr 1000:
the step whose error each rank raised, and its line).
"""

from __future__ import annotations

import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from r1kit import dist  # noqa: E402
from r1kit.config import SFTConfig  # noqa: E402
from r1kit.modeling import load_model  # noqa: E402
from r1kit.sft.train import make_optimizer, train_step  # noqa: E402
from r1kit.train import shard as dp  # noqa: E402
from r1kit.train.finite import NonFiniteError, NonFiniteGuard, require_finite  # noqa: E402


def _error(fn) -> str | None:
    try:
        fn()
    except NonFiniteError as err:
        return str(err)
    return None


def main(job_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init("cpu")
    assert dist.world() == 2, "run me under torchrun with 2 processes"
    job = torch.load(job_path, weights_only=False)
    cfg = SFTConfig.of(micro_batch=2, lr=1000.0)
    model = dp.shard(load_model(None).train())
    opt = make_optimizer(model, cfg.optim)
    res: dict = {}
    # a non-finite loss on rank 1 only (GRPO's loss is each rank's share before the sum)
    loss = math.nan if dist.rank() == 1 else 1.0
    res["skip"] = NonFiniteGuard("skip", lr=1e-3).check(7, loss, 1.0, opt)
    res["stop"] = _error(lambda: NonFiniteGuard("stop", lr=1e-3).check(7, loss, 1.0, opt))
    # the weights of rank 1's shards only
    with torch.no_grad():
        p = next(model.parameters())
        saved = p.to_local().clone()
        if dist.rank() == 1:
            p.to_local().view(-1)[0] = math.inf
        res["weights"] = _error(lambda: NonFiniteGuard("stop", lr=1e-3).check_weights(8, opt))
        res["save"] = _error(lambda: require_finite(model, "checkpoint step-000008"))
        p.to_local().copy_(saved)
    # a real cause: lr 1000 on the same batch twice
    guard = NonFiniteGuard("stop", lr=cfg.optim.lr)
    res["lr"] = None
    for step in (1, 2, 3):
        try:
            train_step(model, opt, job["rows"], cfg.optim, job["pad_id"], 1e3, guard, step)
        except NonFiniteError as err:
            res["lr"] = [step, str(err)]
            break
    res["finite_after"] = require_finite(model, "x") is None  # the failed step was not applied
    with open(os.path.join(out_dir, f"rank-{dist.rank()}.json"), "w") as f:
        json.dump(res, f)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
