"""Asynchronous one-step-off-policy GRPO: `r1kit zero --async-depth 1` under torchrun.

The job's W ranks split in two (`--generator-ranks K`, default W // 2). Trainer ranks 0..W-K-1
hold the policy FSDP-sharded among themselves only (a process group of their own, entered with
dist.scope, so the trainer, its micro-batch plan and its checkpoints run unchanged on that
part of the job) and run the update. Generator ranks W-K..W-1 each hold a full copy of the
policy and an engine, and sample. While the trainers update on step t's batch, the generators
sample step t+1's from the weights before that update (vN: the weights after N optimizer steps):

    generators: sample b1 (v0), send | sample b2 (v0) | agree, recv v1, send b2 | sample b3 (v1)
    trainers:   recv b1              | update -> v1   | agree, bcast v1, recv b2 | update -> v2

So every batch after the first is trained on one version after the one that sampled it (`lag`
1 in metrics.jsonl); each rollout carries the version that sampled it
(Rollout.policy_version). The loss corrects the lag with r1kit's truncated importance weight
min(pi_theta / pi_engine, C) (rl/grpo.py): the engine's log-probs are the sampling version's,
so the ratio is exactly the staleness correction (besides the engine-vs-trainer numerics it
corrected before). `is_weight` (mean weight per loss token) and `is_clip` (share of loss tokens
cut at C) report it. With --async-depth 1 the default --tis-cap 0 becomes 2 (a cap is needed
for the correction to exist at all; explicit caps > 0 are kept).

The three exchanges come in the same order on both sides, so neither waits on a collective the
other reaches only later:
- rollouts: the generators split each batch's prompts among themselves (sampling/rollout.py
  under their group's scope) and their leader (rank W-K) sends the scored batch to every
  trainer: one pickled object broadcast over a gloo group of the trainers and the leader;
- stop: after each update and after each batch sampled, every rank's one-line failure (the
  trainers' non-finite step under --nan-policy stop, a generator's error, ...) is gathered, so
  each rank stops with the same line instead of the other side dying on a closed connection,
  then one all-reduce (Run.stopping: a SIGTERM anywhere, or the time limit, stops every rank
  after the same step). The same gathering (`tell`) comes once before the first batch is sent
  (the generators' failure on it) and once after the loop (the trainers' last checkpoint). A
  checkpoint write that fails (a full disk) is not raised at once, where the generators would
  wait for a batch the trainers never take: the trainers take the next batch, do not train on
  it, and bring the failure to that step's agreement;
- weights: trainer rank 0 (its full copy, gathered from the shards) to every generator,
  flattened into buckets of 256 MB (dist.broadcast_tensors: NCCL on GPU, gloo on CPU), timed
  (`bcast_s`, `bcast_gb`).

Checkpoints are the trainers' (rank 0 writes the HF model beside the shards). Each records the
data position and the generators' RNG right after the batch it trained on: a resumed run's
generators load the checkpoint's HF weights and sample the next batch from the same prompts
with the same seeds. The batch in flight when a run stops (sampled, not yet trained on) is
dropped; a resumed run samples it again from the checkpoint's weights (one version newer than
the weights that first sampled it), so a resumed async run is not bit-identical to an
uninterrupted one (a synchronous run is).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1kit import dist
from r1kit.config import ZeroConfig
from r1kit.engine import SamplingParams
from r1kit.errors import R1kitError, Stopped, disk_error
from r1kit.rewards.base import WeightedReward
from r1kit.rl.collect import batch_metrics, collect
from r1kit.rl.policy import Policy
from r1kit.sampling.rollout import Rollout
from r1kit.train.run import Bar, Run, how_to_continue

ASYNC_TIS_CAP = 2.0  # --tis-cap under --async-depth 1 when none is given


@dataclass
class Split:
    """This rank's side of the split, and the process groups the sides talk over (every rank
    of the job creates every group, in the same order)."""

    trainers: list[int]  # global ranks 0..W-K-1
    generators: list[int]  # global ranks W-K..W-1; the first is the generators' leader
    group: Any  # this rank's own side: dist.scope(group) makes it the "world"
    weights: Any  # trainer rank 0 + every generator: the weight broadcast
    batches: Any  # every trainer + the generators' leader (gloo): the rollouts

    @property
    def generating(self) -> bool:
        return dist.global_rank() in self.generators

    @property
    def leader(self) -> int:
        return self.generators[0]


@dataclass
class Batch:
    """One step's scored rollouts, as the generators' leader sends them to the trainers."""

    rollouts: list[Rollout]
    dropped: int  # groups dropped by dynamic sampling
    data_pos: int  # prompts consumed from the training stream up to and with this batch
    rng: dict[str, Any]  # the generators' RNG right after sampling it (its checkpoint's)
    gen_s: float  # seconds the generators took to sample and score it


def split(cfg: ZeroConfig, run: Run) -> Split | None:
    """The split of this job's ranks for --async-depth 1, or None: the synchronous loop (no
    --async-depth, or one process, which says so in one line). Sets --tis-cap 2 when it is 0."""
    if cfg.run.async_depth == 0:
        if cfg.run.generator_ranks:
            run.console_line(
                f"--generator-ranks {cfg.run.generator_ranks} without --async-depth 1: ignored "
                "(every rank samples, then trains)"
            )
        return None
    world = dist.world()
    if world == 1:
        run.console_line(
            "--async-depth 1 needs 2 or more ranks (torchrun --nproc-per-node N): "
            "running the synchronous loop in this one process"
        )
        return None
    k = cfg.run.generator_ranks or world // 2
    if not 1 <= k < world:
        raise R1kitError(
            f"--generator-ranks {k} with {world} ranks: it must be between 1 and {world - 1} "
            "(the other ranks train)"
        )
    if cfg.lora.rank:
        raise R1kitError("--lora-rank does not run under torchrun yet; shard the full model")
    if cfg.algo.tis_cap == 0:
        cfg.algo.tis_cap = ASYNC_TIS_CAP
        run.console_line(
            f"--async-depth 1: the one-step lag is corrected by the truncated importance weight, "
            f"--tis-cap {ASYNC_TIS_CAP:g}"
        )
    run.console_line(
        f"async GRPO: {world - k} trainer rank(s), {k} generator rank(s), one step off-policy"
    )
    return make_split(world, k)


def make_split(world: int, k: int) -> Split:
    """The last `k` of `world` ranks generate, the others train (every rank calls this)."""
    trainers, generators = list(range(world - k)), list(range(world - k, world))
    own = [dist.new_group(trainers), dist.new_group(generators)]
    weights = dist.new_group([0, *generators])
    batches = dist.new_group([*trainers, generators[0]], backend="gloo")
    mine = own[1] if dist.global_rank() in generators else own[0]
    return Split(trainers, generators, mine, weights, batches)


def tell(failure: R1kitError | None = None) -> None:
    """Every rank's one-line failure (an error caught on its side), raised on every rank of the
    job: the first in rank order, so each rank ends with the same line (the failed rank with its
    own error). Every rank calls this at the same point; it is also a barrier of the job."""
    dist.raise_first(dist.all_gather_objects(None if failure is None else str(failure)), failure)


def agree(run: Run, limit_s: float, failure: R1kitError | None = None) -> bool:
    """run.stopping() over every rank of the job, after any rank's `failure` is raised on every
    rank (tell; every rank calls this at the same point of a step)."""
    tell(failure)
    return run.stopping(limit_s)


def shared(failure: R1kitError | None, sp: Split) -> R1kitError | None:
    """One trainer's failure, held by every trainer (the first in rank order), so that they all
    skip the same update (FSDP's collectives must line up)."""
    if len(sp.trainers) == 1:
        return failure
    with dist.scope(sp.group):
        lines = dist.all_gather_objects(None if failure is None else str(failure))
    return dist.first_failure(lines, failure)


def write_failure(err: Exception, run: Run, where: Path) -> R1kitError | None:
    """A write's failure under the directory `where` (the metrics row, a checkpoint) as one line
    (a full disk, an unwritable directory: an OSError, or a write library's error around one),
    naming the newest complete checkpoint, as Run words it in one process; None for any other
    error (a bug: raised with its traceback)."""
    if isinstance(err, R1kitError):
        return err
    line = disk_error(err, where) or (str(err) if isinstance(err, OSError) else None)
    return None if line is None else run.unsaved(line)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def restore_sampling_rng(state: dict[str, Any]) -> None:
    """The RNG that samples, as a checkpoint left it: an async run's generators' (gen_rng),
    else the checkpoint's own (a synchronous run samples with it)."""
    rng = state.get("gen_rng") or state["rng"]
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])


def train_async(
    cfg: ZeroConfig,
    run: Run,
    policy: Policy,
    sp: Split,
    stream: Iterator[dict],
    data_pos: int,
    start: int,
    params: SamplingParams,
    reward: WeightedReward,
) -> int:
    """Steps start+1..cfg.run.steps on this rank's side; returns the last step trained (the
    same on every rank). Raises Stopped on every rank after a SIGTERM's checkpoint."""
    if start >= cfg.run.steps:
        return start
    with run.bar(cfg.run.steps, start) as bar:
        if sp.generating:
            return _generate(cfg, run, policy, sp, stream, data_pos, start, params, reward)
        return _train(cfg, run, policy, sp, start, bar)


def _generate(
    cfg: ZeroConfig,
    run: Run,
    policy: Policy,
    sp: Split,
    stream: Iterator[dict],
    data_pos: int,
    start: int,
    params: SamplingParams,
    reward: WeightedReward,
) -> int:
    tok, engine = policy.tokenizer, policy.engine
    weights = list(policy.model.parameters())  # the trainers' full copy has the same order
    version = start  # the optimizer steps behind the weights sampling now

    def sample() -> Batch:
        nonlocal data_pos
        t0 = time.time()
        with dist.scope(sp.group):  # the generators split the prompts among themselves
            rollouts, used, dropped = collect(
                engine, tok, stream, cfg.template, cfg.algo, params, reward
            )
        data_pos += used
        for r in rollouts:
            r.policy_version = version
        return Batch(rollouts, dropped, data_pos, rng_state(), round(time.time() - t0, 3))

    def send(batch: Batch) -> None:
        if dist.global_rank() == sp.leader:
            dist.broadcast_object(batch, sp.leader, sp.batches)

    first = failure = None
    try:
        first = sample()
    except Stopped:
        raise
    except R1kitError as err:  # the trainers wait for this batch: told, then raised
        failure = err
    tell(failure)  # with the trainers, before they wait for the batch
    send(first)
    step = start
    for step in range(start + 1, cfg.run.steps + 1):
        failure = nxt = None
        try:
            nxt = sample() if step < cfg.run.steps else None  # overlaps the trainers' update
        except Stopped:
            raise
        except R1kitError as err:  # told to the trainers, then raised
            failure = err
        stop = agree(run, cfg.run.time_limit_s, failure)  # with the trainers, after `step`
        dist.broadcast_tensors(weights, 0, sp.weights)  # v_step
        if hasattr(engine, "sync_weights"):
            engine.sync_weights()
        version = step
        if stop or nxt is None:
            break  # a stop drops the batch in flight: a resumed run samples it again
        send(nxt)
    tell()  # with the trainers, once the last step's checkpoint is written: its failure raised
    if run.terminated:  # leave with the trainers
        name = signal.Signals(run.stop_signal).name
        path = run.out / "checkpoints" / f"step-{step:06d}"  # the trainers' (Run.save's line)
        raise Stopped(
            f"stopped by {name} after step {step}; checkpoint {path} is saved: continue with "
            f"{how_to_continue(run.job, run.out)}",
            run.stop_signal,
        )
    return step


def _train(cfg: ZeroConfig, run: Run, policy: Policy, sp: Split, start: int, bar: Bar) -> int:
    engine, trainer = policy.engine, policy.trainer
    assert trainer is not None
    cuda = torch.device(policy.device).type == "cuda"
    asleep = cuda and hasattr(engine, "sleep")
    if asleep:  # this rank's engine evaluates only: its KV cache back for the updates
        engine.sleep()
    full = list(policy.engine_model.parameters())  # what rank 0 broadcasts
    lead = dist.global_rank() == 0
    done = start
    tell()  # with the generators, once the first batch is sampled: their failure raised
    unsaved: R1kitError | None = None  # a failed write of the last step (the same on every trainer)
    stopped: Stopped | None = None
    for step in range(start + 1, cfg.run.steps + 1):
        tw = time.time()
        batch: Batch = dist.broadcast_object(None, sp.leader, sp.batches)
        tu = time.time()
        rollouts = batch.rollouts
        version = min(r.policy_version for r in rollouts)  # one version per batch
        behind = trainer.step_count - version  # 0 at the first step (and after a resume), then 1
        failure = unsaved  # a write that failed: no update; the generators hear it below
        try:
            if failure is None:
                with dist.scope(sp.group):
                    upd = trainer.update(rollouts)
                    if policy.engine_model is not policy.model:  # the full copy, from the shards
                        dist.gather_weights(policy.model, policy.engine_model)
        except Stopped:
            raise
        except R1kitError as err:  # a non-finite step (--nan-policy stop): told to the generators
            failure = err
        if cuda:
            torch.cuda.synchronize()
        tb = time.time()
        stop = agree(run, cfg.run.time_limit_s, failure)  # with the generators
        t0 = time.time()
        sent = dist.broadcast_tensors(full, 0, sp.weights) if lead else 0
        if cuda:
            torch.cuda.synchronize()
        if "compile_s" in upd:  # the compiled update's compile time (train/compile.py)
            run.console.print(f"compiled the update in {upd['compile_s']:.1f} s")
        row = {"step": step, **batch_metrics(rollouts), "dropped_groups": batch.dropped, **upd}
        row.update(
            policy_version=version,
            lag=behind,
            gen_s=batch.gen_s,
            wait_s=round(tu - tw, 3),  # the trainers idle, waiting for the batch
            train_s=round(tb - tu, 3),
            bcast_s=round(time.time() - t0, 3),
            bcast_gb=round(sent / 1e9, 4),
            data_pos=batch.data_pos,
        )
        # a failed write (the metrics row, the checkpoint) is told to the generators at the
        # next agreement (theirs after sampling the next batch, or the one after the loop), not
        # raised here, where they would wait for a batch or a collective never reached
        try:
            run.log(row)  # rank 0 alone appends it: the other trainers learn how it went
        except Exception as err:
            unsaved = write_failure(err, run, run.out)
            if unsaved is None:
                raise
        unsaved = shared(unsaved, sp)
        bar.advance(
            f"reward {row['reward']:.2f} acc {row['accuracy']:.2f} lag {behind} "
            f"len {row['response_len']:.0f}"
        )
        done = step
        if unsaved is None and run.due(step, cfg.run.steps, cfg.run.save_every, stop):
            extra = {"data_pos": batch.data_pos, "gen_rng": batch.rng}
            try:  # a failure here is the same on every trainer (dist.main_part, DCP)
                with dist.scope(sp.group):
                    policy.save(run, step, extra)
            except Stopped as err:  # saved; a SIGTERM: stop after the agreement below
                stopped = err
            except Exception as err:
                unsaved = write_failure(err, run, run.out / "checkpoints")
                if unsaved is None:
                    raise
        if stop:
            break
    tell(unsaved)  # with the generators: the last checkpoint written, or its failure raised
    if stopped is not None:
        raise stopped
    if asleep:
        engine.wake()
    if hasattr(engine, "sync_weights"):  # the final evaluation samples from the last weights
        engine.sync_weights()
    return done
