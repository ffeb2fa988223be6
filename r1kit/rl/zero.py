"""The `r1kit zero` job: evaluate, train with GRPO on rule-checked rewards, evaluate, report.

OUT/config.json      the resolved ZeroConfig (a resumed run reads it back)
OUT/base_eval.json   held-out results of the starting model
OUT/metrics.jsonl    one row per step
OUT/checkpoints/     crash-safe checkpoints (HF format + trainer state)
OUT/final/           the trained model, HF format
OUT/samples.jsonl    held-out completions of the final model
OUT/summary.json     base_pass1, final_pass1, base_passk, final_passk, k, steps, wall_s, ...
OUT/report.png       accuracy / reward / length / reflection per step

Under `torchrun --nproc-per-node N` the same job runs data-parallel: rollouts and evaluation
split over the ranks (sampling/rollout.py, sampling/heldout.py), the policy FSDP-sharded
(train/shard.py), sharded checkpoints; rank 0 writes the files above. With --async-depth 1 the
ranks split into generators and trainers instead, one step off-policy (rl/async_loop.py);
evaluation still spreads over every rank.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator

import torch

from r1kit import dist, sandbox
from r1kit.config import ZeroConfig
from r1kit.data.datasets import check_readable, heldout, train_stream
from r1kit.data.fit import PromptFit, model_context
from r1kit.data.identity import problems_identity
from r1kit.engine import SamplingParams
from r1kit.errors import R1kitError
from r1kit.modeling import device_of, resolve_model
from r1kit.rewards.base import WeightedReward, parse_reward_spec
from r1kit.rl import async_loop
from r1kit.rl.collect import batch_metrics, collect
from r1kit.rl.policy import Policy
from r1kit.rl.report import plot_report
from r1kit.sampling.heldout import eval_params, evaluate
from r1kit.train import files
from r1kit.train.run import Run
from r1kit.train.skipped import skipped_steps

# the held-out numbers summary.json gives for the base and the final model (base_X, final_X)
REPORTED = (
    "pass1",
    "passk",
    "pass1_stderr",
    "format_rate",
    "formatted_accuracy",
    "mean_length",
    "reflection_rate",
)


def _inputs(cfg: ZeroConfig) -> tuple[WeightedReward, list[dict]]:
    """The rewards and the held-out problems; everything a user can get wrong here (a reward
    name, an empty eval file, code rewards where no sandbox works, a model path) fails before
    anything heavy loads."""
    reward = WeightedReward(parse_reward_spec(cfg.rewards))
    check_readable(cfg.dataset)  # a training file's bytes; its rows load with the model's fit
    problems = heldout(cfg.dataset, cfg.eval.problems, eval_file=cfg.eval_data)
    if not problems:
        raise R1kitError(
            f"no held-out problems in {cfg.eval_data or cfg.dataset}; pass --eval-data FILE.jsonl"
        )
    sandbox.configure(unsafe=cfg.unsafe_exec)
    if any(n.startswith("code") for n in reward.weights) or any("tests" in p for p in problems):
        sandbox.shared()  # no sandbox works here and no --unsafe-exec: stop before any loading
    resolve_model(cfg.model)
    return reward, problems


def run_zero(cfg: ZeroConfig, resume: bool = False, progress: bool = True) -> dict:
    cfg.validate()
    device = dist.init(device_of(cfg.run.device))  # under torchrun: this rank's device
    with Run.of(cfg.run, "zero", resume, progress) as run:
        return _train(cfg, run, device)


def _train(cfg: ZeroConfig, run: Run, device: str) -> dict:
    """run_zero inside its run directory (held, with its faults turned into one line)."""
    reward, problems = _inputs(cfg)
    random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    sp = async_loop.split(cfg, run)  # None: the synchronous loop
    with dist.scope(sp and sp.group):  # async: the trainers shard among themselves
        policy = Policy(cfg, device, run.checkpoint, train=not (sp and sp.generating))
    tok, engine = policy.tokenizer, policy.engine
    # prompts too long for the context (with room for --max-tokens) are dropped here, counted
    fit = PromptFit(tok, cfg.template, model_context(policy.model, engine), cfg.sampling.max_tokens)
    problems = fit.keep(problems, "held-out problems")
    train = train_stream(cfg.dataset, cfg.run.seed, fit)
    source = cfg.eval_data or f"{cfg.dataset} (held-out split)"
    data = problems_identity(cfg.dataset, cfg.run.seed, problems, source)
    run.record_data(data, cfg.run.allow_data_change)  # --resume: a changed dataset is refused
    with dist.scope(sp and sp.group):
        state = policy.resume(run.checkpoint)
    if state:  # an async run's checkpoint: the generators' RNG samples on
        async_loop.restore_sampling_rng(state)
    start = run.resume_from(state)
    consumed = state["data_pos"] if state else 0
    stream = itertools.islice(train, consumed, None)
    run.write_config(cfg.to_dict())

    # held-out: the R1 protocol's sampling, the same seed before and after
    eval_sp = eval_params(
        cfg.eval.k,
        cfg.sampling.max_tokens,
        tok.eos_token_id,
        cfg.run.seed + 1,
        cfg.eval.temperature,
        cfg.eval.top_p,
    )
    base = run.read_json("base_eval.json")
    if base is None:
        run.console.print(
            f"evaluating the base model on {len(problems)} held-out problems x {cfg.eval.k}"
        )
        base, _ = evaluate(engine, tok, problems, cfg.template, eval_sp)
        run.write_json("base_eval.json", base)
    run.console.print(
        f"base: pass@1 {base['pass1']:.3f}  pass@{cfg.eval.k} {base['passk']:.3f}  "
        f"format {base['format_rate']:.2f}"
    )

    params = SamplingParams(
        n=cfg.algo.group_size,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        max_tokens=cfg.sampling.max_tokens,
        stop_token_ids=(tok.eos_token_id,),
        logprobs=True,
    )
    if sp is not None:
        done = async_loop.train_async(cfg, run, policy, sp, stream, consumed, start, params, reward)
    else:
        done = _sync_loop(cfg, run, policy, stream, consumed, start, params, reward)

    run.finishing()  # a stop signal from here on: --resume redoes only what follows
    run.console.print("evaluating the trained model")
    final, rollouts = evaluate(engine, tok, problems, cfg.template, eval_sp)
    if run.main:
        run.save_final(policy.final_model(), tok)
        rows = [
            {"question": r.example["question"], "completion": r.text, **r.rewards} for r in rollouts
        ]
        files.write_text(run.out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = {f"{w}_{m}": ev[m] for m in REPORTED for w, ev in (("base", base), ("final", final))}
    summary.update(k=cfg.eval.k, eval_problems=len(problems), steps=done)
    summary["wall_s"] = round(run.wall(), 1)
    metrics = run.metrics()  # every rank: it waits for rank 0's rows
    summary.update(skipped_steps(metrics))  # --nan-policy skip: steps not applied
    compiled = [r["compile_s"] for r in metrics if r.get("compile_s") is not None]
    if compiled:  # seconds the update spent compiling, all in one step unless it recompiled
        summary["update_compile_s"] = round(sum(compiled), 1)
    if run.main:
        plot_report(metrics, run.out / "report.png", base, final)
    return run.finish(summary)


def _sync_loop(
    cfg: ZeroConfig,
    run: Run,
    policy: Policy,
    stream: Iterator[dict],
    consumed: int,
    start: int,
    params: SamplingParams,
    reward: WeightedReward,
) -> int:
    """Steps start+1..cfg.run.steps, each sampling then training on every rank; returns the
    last step trained."""
    tok, engine = policy.tokenizer, policy.engine
    done = start
    with run.bar(cfg.run.steps, start) as bar:
        for step in range(start + 1, cfg.run.steps + 1):
            ts = time.time()
            rollouts, used, dropped = collect(
                engine, tok, stream, cfg.template, cfg.algo, params, reward
            )
            consumed += used
            tg = time.time()
            upd = policy.update(rollouts)
            if "compile_s" in upd:  # the compiled update's one-time cost (train/compile.py)
                run.console.print(f"compiled the update in {upd['compile_s']:.1f} s")
            row = {"step": step, **batch_metrics(rollouts), "dropped_groups": dropped, **upd}
            row.update(gen_s=round(tg - ts, 3), train_s=round(time.time() - tg, 3))
            run.log(row)
            bar.advance(
                f"reward {row['reward']:.2f} acc {row['accuracy']:.2f} fmt {row['format']:.2f} "
                f"len {row['response_len']:.0f}"
            )
            done = step
            stop = run.stopping(cfg.run.time_limit_s)  # --time-limit-s: evaluate what trained
            if run.due(step, cfg.run.steps, cfg.run.save_every, stop):
                policy.save(run, step, {"data_pos": consumed})
            if stop:
                break
    return done
