"""A torchrun worker for tests/test_dist.py: GRPO steps on the embedded model, FSDP2-sharded over
the gloo ranks on CPU, and sharded checkpoints.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py \
        JOB.pt RESULT.pt

JOB.pt holds {"tokenizer": the embedded one, "cases": [(ZeroConfig dict, rollouts), ...], "ckpt": (dir, rollouts A, rollouts B)
or None, "resume": (dir, rollouts B) or None}. Each case runs one update from the embedded
weights; "ckpt" runs update A, saves a sharded checkpoint, then update B; "resume" loads the
checkpoint into a fresh model and optimizer and runs update B. Rank 0 writes RESULT.pt:
{"cases": [(metrics, weights)], "ckpt": weights after B, "resume": (metrics, weights) after B}.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from r1kit import dist  # noqa: E402
from r1kit.config import ZeroConfig  # noqa: E402
from r1kit.modeling import load_model  # noqa: E402
from r1kit.rl.trainer import GRPOTrainer  # noqa: E402
from r1kit.train import shard as dp  # noqa: E402
from r1kit.train.checkpoint import (  # noqa: E402
    latest_checkpoint,
    load_trainer_state,
    save_sharded_checkpoint,
)


def trainer_for(cfg: ZeroConfig, pad_id: int):
    """A fresh sharded policy (+ reference when beta > 0), its trainer and the full copy."""
    model = load_model(None).train()
    ref = load_model(None).eval().requires_grad_(False) if cfg.algo.beta > 0 else None
    full = dp.prepare(model, ref)
    s = cfg.sampling
    trainer = GRPOTrainer(
        model,
        cfg.algo,
        cfg.optim,
        temperature=s.temperature,
        max_tokens=s.max_tokens,
        pad_id=pad_id,
        ref_model=ref,
    )
    return trainer, full


def weights(trainer, full) -> dict[str, torch.Tensor]:
    dist.gather_weights(trainer.model, full)  # every rank takes part
    return {k: v.detach().clone() for k, v in full.state_dict().items()}


def main(job_path: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init("cpu")
    assert dist.world() > 1, "run me under torchrun with 2+ processes"
    job = torch.load(job_path, weights_only=False)
    tok = job["tokenizer"]  # pickled: spares each rank loading it
    pad = tok.pad_token_id
    res: dict = {"world": dist.world()}
    cases = []
    for cfg_d, rollouts in job.get("cases", []):
        trainer, full = trainer_for(ZeroConfig.of(**cfg_d), pad)
        assert dist.is_sharded(trainer.model)
        m = trainer.update(rollouts)
        cases.append((m, weights(trainer, full)))
    res["cases"] = cases
    if job.get("ckpt"):
        out, cfg_d, a, b = job["ckpt"]
        trainer, full = trainer_for(ZeroConfig.of(**cfg_d), pad)
        trainer.update(a)
        dist.gather_weights(trainer.model, full)
        save_sharded_checkpoint(
            out, 1, trainer.model, full, tok, trainer.optimizer, {"data_pos": 1}
        )
        m = trainer.update(b)
        res["ckpt"] = (m, weights(trainer, full))
    if job.get("resume"):
        out, cfg_d, b = job["resume"]
        trainer, full = trainer_for(ZeroConfig.of(**cfg_d), pad)
        state = load_trainer_state(latest_checkpoint(out), trainer.optimizer, trainer.model)
        trainer.step_count = state["step"]
        m = trainer.update(b)
        res["resume"] = (m, weights(trainer, full))
    if dist.is_main():
        torch.save(res, result_path)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
