"""A torchrun worker for tests/test_async_grpo.py: `r1kit zero --async-depth 1` on 2 gloo ranks
(1 trainer, 1 generator), run through run_zero with observers on what the loop hands the
trainer.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/async_worker.py JOB RES

JOB (torch.save): {"cfg": flat ZeroConfig fields, "resume": bool, "sigterm_at": N or None}.
The observers wrap, without changing them, GRPOTrainer.update (the rollouts it trains on and the
trainer's weights before the step), the trainer's collate (which rollouts each micro-batch
holds) and grpo.truncated_is_weight (the weights the loss used). With `sigterm_at` the
generator rank sends itself SIGTERM once it has sampled its N-th batch (a scheduler's signal
that reached one rank). Each rank writes RES.rank-R.pt: its records, the summary or the
Stopped line.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

import r1kit.rl.trainer as trainer_module
from r1kit import dist
from r1kit.config import ZeroConfig
from r1kit.errors import Stopped
from r1kit.rl import async_loop, grpo
from r1kit.rl.zero import run_zero


def observe(records: list[dict], sigterm_at: int | None) -> None:
    update, collate = trainer_module.GRPOTrainer.update, trainer_module.collate
    tis, collect = grpo.truncated_is_weight, async_loop.collect
    index: dict[int, int] = {}

    def on_update(self, rollouts):
        index.clear()
        index.update({id(r): i for i, r in enumerate(rollouts)})
        rec = {
            "version": self.step_count,
            "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "rollouts": [
                dict(
                    question=r.example["question"],
                    prompt_ids=list(r.prompt_ids),
                    completion_ids=list(r.completion_ids),
                    logprobs=list(r.logprobs),
                    policy_version=r.policy_version,
                )
                for r in rollouts
            ],
            "micro": [],
            "isw": [],
        }
        records.append(rec)
        rec["metrics"] = update(self, rollouts)
        return rec["metrics"]

    def on_collate(rows, *args, **kw):
        records[-1]["micro"].append([index[id(r)] for r in rows])
        return collate(rows, *args, **kw)

    def on_tis(old_logp, engine_logp, cap):
        out = tis(old_logp, engine_logp, cap)
        records[-1]["isw"].append(out.detach().clone())
        return out

    calls = [0]

    def on_collect(*args, **kw):
        out = collect(*args, **kw)
        calls[0] += 1
        if calls[0] == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer_module.GRPOTrainer.update = on_update
    trainer_module.collate = on_collate
    grpo.truncated_is_weight = on_tis
    async_loop.collect = on_collect


def main(job_path: str, res_path: str) -> None:
    job = torch.load(job_path, weights_only=False)
    records: list[dict] = []
    sigterm = job.get("sigterm_at") if int(os.environ["RANK"]) == 1 else None
    observe(records, sigterm)
    res: dict = {}
    try:
        res["summary"] = run_zero(ZeroConfig.of(**job["cfg"]), job["resume"], progress=False)
    except Stopped as err:
        res["stopped"] = (str(err), err.exit_code)
    res["records"] = records
    torch.save(res, f"{res_path}.rank-{dist.global_rank()}.pt")
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
