"""A torchrun worker for tests/test_dist_sft.py: SFT optimizer steps on the embedded model,
FSDP2-sharded over the gloo ranks on CPU.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_sft_worker.py \
        JOB.pt RESULT.pt

JOB.pt holds {"pad_id": int, "cases": [(SFTConfig dict, lr, [Encoded rows]), ...]}. Each case
runs one train_step from the embedded weights on the whole batch (every rank gets the same rows
and trains its share). Rank 0 writes RESULT.pt: {"world": N, "cases": [((loss, tokens,
grad_norm), weights)]}, the weights gathered from the shards.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from r1kit import dist  # noqa: E402
from r1kit.config import SFTConfig  # noqa: E402
from r1kit.modeling import load_model  # noqa: E402
from r1kit.sft.train import make_optimizer, train_step  # noqa: E402
from r1kit.train import shard as dp  # noqa: E402


def main(job_path: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init("cpu")
    assert dist.world() > 1, "run me under torchrun with 2+ processes"
    job = torch.load(job_path, weights_only=False)
    res: dict = {"world": dist.world(), "cases": []}
    for cfg_d, lr, rows in job["cases"]:
        cfg = SFTConfig.of(**cfg_d)
        model = dp.shard(load_model(None).train())
        assert dist.is_sharded(model)
        opt = make_optimizer(model, cfg.optim)
        m = train_step(model, opt, rows, cfg.optim, job["pad_id"], lr)
        full = dp.unshard(model, None, "cpu")  # every rank takes part
        res["cases"].append((m, {k: v.detach().clone() for k, v in full.state_dict().items()}))
    if dist.is_main():
        torch.save(res, result_path)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
