"""Scaling of one GRPO step over GPUs (issue 10): r1kit's data-parallel path under torchrun.

    torchrun --nproc-per-node N bench/scale.py                     # 1.5B shape, the full workload
    torchrun --nproc-per-node 2 bench/scale.py --shape tiny --device cpu --prompts 8 \
        --group 4 --prompt-len 16 --gen 16 --steps 2 --warmup 1    # a CPU smoke run (gloo)
    torchrun --nproc-per-node N bench/scale.py --async-depth 1 --generator-ranks K   # async

Workload: a random-init Qwen2.5 shape (default 1.5B: hidden 1536, 28 layers, 12 heads, 2 KV
heads, intermediate 8960, vocabulary 151,936, tied embeddings; bf16 on GPU), --prompts prompts of
--prompt-len random tokens x --group completions of exactly --gen tokens (no stop token), random
rewards per completion, β = 0, token-level loss, one optimizer step per batch. Each step is the
product's path (r1kit/train/shard.py, r1kit/sampling/rollout.py): every rank's engine samples its share of the prompts, one
all-gather of the rollouts, engine asleep, sharded GRPOTrainer.update on the rank's share of the
rows, weights gathered from the shards into every engine, engine awake.

Rank 0 writes bench/results/scale_<N>gpu.json (`R1KIT_BENCH_OUT` overrides the folder; on CPU
scale_<N>cpu.json): mean step time after --warmup steps and its phases, rollout tokens/s (all
ranks' completion tokens / rollout time), update tokens/s (prompt + completion tokens trained /
update time), peak memory per GPU, world size and the settings.

`--async-depth 1` times the product's one-step-off-policy loop instead (r1kit/rl/async_loop.py:
the last K ranks sample step t+1 while the others update on step t, FSDP-sharded among
themselves; weights broadcast to the generators in buckets after each update; the rollouts
sent over gloo), on the same workload. Its step is the interval between the ends of two
consecutive weight broadcasts on trainer rank 0 (steady state: max(sampling, update) plus the
exchanges); scale_<N>gpu_async.json holds it as steps per hour beside the phases (generators'
sampling, trainers' update and wait, broadcast time and size), and the ratio to the synchronous
results found in the same folder (scale_1gpu.json: one GPU; scale_<N>gpu.json: the same ranks).
With R1KIT_SHARE_GPUS=1 and more ranks than GPUs the files are scale_<N>rank_<G>gpu[_async].json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch
from shapes import SHAPES  # bench/shapes.py, beside this script

from r1kit import dist
from r1kit.config import ZeroConfig
from r1kit.engine import SamplingParams, make_engine
from r1kit.rl import async_loop
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import Rollout
from r1kit.train import shard as dp


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="1.5B", choices=sorted(SHAPES))
    p.add_argument("--device", default="auto", help="auto | cuda | cpu (gloo)")
    p.add_argument("--prompts", type=int, default=256, help="prompts per step, all ranks")
    p.add_argument("--group", type=int, default=8, help="completions per prompt")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen", type=int, default=1024, help="completion tokens, forced")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--micro-batch", type=int, default=16, help="rows per forward/backward")
    p.add_argument("--pack-tokens", type=int, default=0)
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute activations")
    p.add_argument(
        "--compile-update",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compiled update (default off on every rank count: r1kit's auto turns it on only "
        "outside torchrun, so 1- and N-GPU results would compare different update paths)",
    )
    p.add_argument("--kv-memory", type=float, default=0.5, help="engine KV share of free memory")
    p.add_argument("--max-num-seqs", type=int, default=512)
    p.add_argument("--async-depth", type=int, default=0, choices=(0, 1), help="1: async GRPO")
    p.add_argument(
        "--generator-ranks", type=int, default=0, help="async: ranks that sample (0: half)"
    )
    return p.parse_args()


def build(a: argparse.Namespace, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**SHAPES[a.shape], max_position_embeddings=a.prompt_len + a.gen + 64)
    torch.manual_seed(0)  # the same initial weights on every rank
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    return model


def label(world: int, on_gpu: bool) -> str:
    """The result file's scale_<label>.json: 2gpu, 4cpu; with more ranks than GPUs
    (R1KIT_SHARE_GPUS=1) 2rank_1gpu, so a shared-GPU run is never read as an N-GPU one."""
    gpus = torch.cuda.device_count() if on_gpu else 0
    if on_gpu and dist.sharing_gpus() and world > gpus:
        return f"{world}rank_{gpus}gpu"
    return f"{world}{'gpu' if on_gpu else 'cpu'}"


def workload(a: argparse.Namespace, model, on_gpu: bool) -> dict:
    """The fields every result JSON (sync and async) records about the machine and workload."""
    return {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "gpus": min(dist.world(), torch.cuda.device_count()) if on_gpu else 0,
        "torch": torch.__version__,
        "shape": a.shape,
        "params": sum(p.numel() for p in model.parameters()),
        "prompts": a.prompts,
        "group": a.group,
        "prompt_len": a.prompt_len,
        "completion_tokens": a.gen,
        "micro_batch": a.micro_batch,
        "pack_tokens": a.pack_tokens,
        "grad_checkpoint": a.grad_checkpoint,
        "compile_update": a.compile_update,
    }


def make_trainer(model, a: argparse.Namespace, tis_cap: float = 0.0) -> GRPOTrainer:
    cfg = ZeroConfig.of(
        group_size=a.group,
        lr=1e-6,
        micro_batch=a.micro_batch,
        pack_tokens=a.pack_tokens,
        max_new_tokens=a.gen,
        grad_checkpoint=a.grad_checkpoint,
        compile_update=a.compile_update,
        tis_cap=tis_cap,
    )
    return GRPOTrainer(
        model,
        cfg.algo,
        cfg.optim,
        temperature=cfg.sampling.temperature,
        max_tokens=cfg.sampling.max_tokens,
        pad_id=0,
    )


def make_bench_engine(model, a: argparse.Namespace, on_gpu: bool):
    """The engine sampling this rank's share of the prompts (dist.share: of the scope's ranks)."""
    rows = min(a.max_num_seqs, max(1, len(dist.share(a.prompts))) * a.group)
    kw = dict(max_num_seqs=rows, kv_memory=a.kv_memory) if on_gpu else {}
    return make_engine(model, pad_token_id=0, kind="paged" if on_gpu else "auto", **kw)


def rollout_phase(engine, a, step: int) -> tuple[list[Rollout], int]:
    """This rank's share of the step's prompts sampled, then all ranks' rollouts gathered."""
    rng = random.Random(1000 + step)  # the same prompts on every rank
    vocab = SHAPES[a.shape]["vocab_size"]
    prompts = [[rng.randrange(vocab) for _ in range(a.prompt_len)] for _ in range(a.prompts)]
    mine = dist.share(a.prompts)
    params = SamplingParams(n=a.group, temperature=1.0, max_tokens=a.gen, logprobs=True)
    local: list[Rollout] = []
    if len(mine):
        outs = engine.generate([prompts[i] for i in mine], params)
        for i, out in zip(mine, outs):
            for s in out.samples:
                r = Rollout({}, prompts[i], s.token_ids, s.logprobs, "", s.finish_reason)
                r.reward = rng.random()  # any non-constant reward: non-zero advantages
                local.append(r)
    made = sum(len(r.completion_ids) for r in local)
    return [r for part in dist.all_gather_objects(local) for r in part], made


def main() -> None:
    a = parse()
    want = "cuda" if a.device == "auto" and torch.cuda.is_available() else a.device
    device = dist.init("cpu" if want == "auto" else want)
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    if a.async_depth:
        return run_async(a, device)
    model = build(a, device)
    engine_model = dp.prepare(model)
    trainer = make_trainer(model, a)
    engine = make_bench_engine(engine_model, a, on_gpu)

    def now() -> float:
        if on_gpu:
            torch.cuda.synchronize()
        dist.barrier()  # a phase ends when its slowest rank does
        return time.perf_counter()

    steps = []
    for step in range(a.warmup + a.steps):
        if on_gpu and step == a.warmup:
            torch.cuda.reset_peak_memory_stats()
        t0 = now()
        rollouts, _ = rollout_phase(engine, a, step)
        t1 = now()
        if on_gpu:
            engine.sleep()
        m = trainer.update(rollouts)
        t2 = now()
        dp.sync(model, engine_model, engine)
        if on_gpu:
            engine.wake()
        t3 = now()
        comp = sum(len(r.completion_ids) for r in rollouts)
        total = comp + sum(len(r.prompt_ids) for r in rollouts)
        row = dict(
            step=step,
            step_s=t3 - t0,
            rollout_s=t1 - t0,
            update_s=t2 - t1,
            sync_s=t3 - t2,
            completion_tokens=comp,
            update_tokens=total,
            loss=m["loss"],
            grad_norm=m["grad_norm"],
        )
        if dist.is_main():
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
        if step >= a.warmup:
            steps.append(row)

    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0
    peaks = dist.all_gather_objects(round(peak, 2))
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in steps[0] if k != "step"}
    res = {
        "world_size": dist.world(),
        **workload(a, engine_model, on_gpu),
        "steps_timed": len(steps),
        "step_s": round(mean["step_s"], 3),
        "rollout_s": round(mean["rollout_s"], 3),
        "update_s": round(mean["update_s"], 3),
        "sync_s": round(mean["sync_s"], 3),
        "rollout_tokens_per_s": round(mean["completion_tokens"] / mean["rollout_s"], 1),
        "update_tokens_per_s": round(mean["update_tokens"] / mean["update_s"], 1),
        "peak_mem_gib_per_gpu": peaks,
        "steps": steps,
    }
    if dist.is_main():
        out = Path(os.environ.get("R1KIT_BENCH_OUT", Path(__file__).parent / "results"))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"scale_{label(dist.world(), on_gpu)}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(
            f"wrote {path}: step {res['step_s']} s, rollout {res['rollout_tokens_per_s']} "
            f"tok/s, update {res['update_tokens_per_s']} tok/s, peak {peaks} GiB"
        )
    dist.shutdown()


def run_async(a: argparse.Namespace, device: str) -> None:
    """The async loop's steps (r1kit/rl/async_loop.py's protocol without the run around it);
    rank 0 writes scale_<N>gpu_async.json."""
    on_gpu = device.startswith("cuda")
    world = dist.world()
    if world < 2:
        raise SystemExit("--async-depth 1 needs 2 or more ranks (torchrun --nproc-per-node N)")
    k = a.generator_ranks or world // 2
    if not 1 <= k < world:
        raise SystemExit(f"--generator-ranks must be between 1 and {world - 1}")
    sp = async_loop.make_split(world, k)
    model = build(a, device)
    total = a.warmup + a.steps

    def sync_device() -> float:
        if on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    steps: list[dict] = []
    if sp.generating:
        model.eval().requires_grad_(False)
        with dist.scope(sp.group):
            engine = make_bench_engine(model, a, on_gpu)
        weights = list(model.parameters())
        version = 0

        def sample(step: int) -> async_loop.Batch:
            t0 = sync_device()
            with dist.scope(sp.group):  # the generators split the prompts
                rollouts, _ = rollout_phase(engine, a, step)
            for r in rollouts:
                r.policy_version = version
            return async_loop.Batch(rollouts, 0, 0, {}, round(sync_device() - t0, 3))

        def send(batch: async_loop.Batch) -> None:
            if dist.global_rank() == sp.leader:
                dist.broadcast_object(batch, sp.leader, sp.batches)

        send(sample(0))
        for step in range(total):
            nxt = sample(step + 1) if step + 1 < total else None  # overlaps the update
            dist.broadcast_tensors(weights, 0, sp.weights)
            engine.sync_weights()
            version = step + 1
            if nxt is None:
                break
            send(nxt)
    else:
        with dist.scope(sp.group):  # FSDP over the trainer ranks only
            engine_model = dp.prepare(model)
            trainer = make_trainer(model, a, tis_cap=async_loop.ASYNC_TIS_CAP)
        full = list(engine_model.parameters())
        last = None
        for step in range(total):
            tw = time.perf_counter()
            batch = dist.broadcast_object(None, sp.leader, sp.batches)
            tu = time.perf_counter()
            lag = trainer.step_count - min(r.policy_version for r in batch.rollouts)
            with dist.scope(sp.group):
                m = trainer.update(batch.rollouts)
                if engine_model is not model:
                    dist.gather_weights(model, engine_model)
            tb = sync_device()
            sent = dist.broadcast_tensors(full, 0, sp.weights) if dist.global_rank() == 0 else 0
            te = sync_device()
            comp = sum(len(r.completion_ids) for r in batch.rollouts)
            row = dict(
                step=step,
                step_s=None if last is None else te - last,
                gen_s=batch.gen_s,
                wait_s=tu - tw,
                update_s=tb - tu,
                bcast_s=te - tb,
                bcast_gb=sent / 1e9,
                lag=lag,
                is_weight=m.get("is_weight", 1.0),
                is_clip=m.get("is_clip", 0.0),
                completion_tokens=comp,
                update_tokens=comp + sum(len(r.prompt_ids) for r in batch.rollouts),
                loss=m["loss"],
            )
            last = te
            if dist.global_rank() == 0:
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                print(json.dumps(shown), flush=True)
            if step >= max(1, a.warmup):  # a step's interval needs the one before
                steps.append(row)

    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0
    peaks = dist.all_gather_objects(round(peak, 2))
    if dist.global_rank() != 0:
        dist.shutdown()
        return
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in steps[0] if k != "step"}
    res = {
        "world_size": world,
        "async_depth": 1,
        "trainer_ranks": world - k,
        "generator_ranks": k,
        **workload(a, model, on_gpu),
        "steps_timed": len(steps),
        "step_s": round(mean["step_s"], 3),
        "steps_per_hour": round(3600 / mean["step_s"], 1),
        "gen_s": round(mean["gen_s"], 3),
        "update_s": round(mean["update_s"], 3),
        "wait_s": round(mean["wait_s"], 3),
        "bcast_s": round(mean["bcast_s"], 3),
        "bcast_gb": round(mean["bcast_gb"], 3),
        "lag": [s["lag"] for s in steps],
        "is_weight": round(mean["is_weight"], 4),
        "is_clip": round(mean["is_clip"], 5),
        "rollout_tokens_per_s": round(mean["completion_tokens"] / mean["gen_s"], 1),
        "update_tokens_per_s": round(mean["update_tokens"] / mean["update_s"], 1),
        "peak_mem_gib_per_gpu": peaks,
        "steps": steps,
    }
    out = Path(os.environ.get("R1KIT_BENCH_OUT", Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    for n in sorted({1, world}):  # the synchronous steps measured here before, if any
        sync = out / f"scale_{label(n, on_gpu)}.json"
        if sync.exists():
            s_step = json.loads(sync.read_text())["step_s"]
            res[f"sync_{label(n, on_gpu)}_steps_per_hour"] = round(3600 / s_step, 1)
            res[f"speedup_vs_sync_{label(n, on_gpu)}"] = round(s_step / res["step_s"], 3)
    path = out / f"scale_{label(world, on_gpu)}_async.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    line = ", ".join(f"{k} {v}" for k, v in res.items() if k.startswith("speedup"))
    print(
        f"wrote {path}: async step {res['step_s']} s ({res['steps_per_hour']} steps/h; "
        f"sampling {res['gen_s']} s, update {res['update_s']} s, broadcast {res['bcast_s']} s "
        f"for {res['bcast_gb']} GB){'; ' + line if line else ''}"
    )
    dist.shutdown()


if __name__ == "__main__":
    main()
