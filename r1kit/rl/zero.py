"""The `r1kit zero` job: evaluate, train with GRPO on rule-checked rewards, evaluate, report.

OUT/config.json      the resolved ZeroConfig (a resumed run reads it back)
OUT/base_eval.json   held-out results of the starting model
OUT/metrics.jsonl    one row per step
OUT/checkpoints/     crash-safe checkpoints (HF format + trainer state)
OUT/final/           the trained model, HF format
OUT/samples.jsonl    held-out completions of the final model
OUT/summary.json     base_pass1, final_pass1, base_passk, final_passk, k, steps, wall_s, ...
OUT/report.png       accuracy / reward / length / reflection per step

Under `torchrun --nproc-per-node N` the same job runs data-parallel (r1kit/train/shard.py, r1kit/sampling/rollout.py): rollouts
and evaluation split over the ranks, the policy FSDP-sharded, sharded checkpoints; rank 0 writes
the files above.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

import torch

from r1kit import dist, sandbox
from r1kit.chat import set_template
from r1kit.config import ZeroConfig
from r1kit.data.datasets import heldout, train_stream
from r1kit.engine import SamplingParams, make_engine
from r1kit.errors import R1kitError
from r1kit.modeling import device_of, load_model, load_tokenizer, resolve_model, save_model
from r1kit.rewards.base import WeightedReward, parse_reward_spec
from r1kit.rl import grpo
from r1kit.rl.report import plot_report
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.heldout import evaluate
from r1kit.sampling.rollout import generate_scored
from r1kit.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    save_sharded_checkpoint,
)
from r1kit.train.lora import add_lora, load_lora_state, lora_state, merged
from r1kit.train.run import read_metrics
from r1kit.train.shard import prepare, sync


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise R1kitError(f"output directory {out} is not writable ({err.strerror})") from None


def _engine_kw(cfg: ZeroConfig) -> dict:
    """Paged-engine options: no more sequences than one step samples. Unseeded requests take
    their seeds from Python's `random`, which this job seeds and checkpoints."""
    if cfg.run.engine == "hf":
        return {}
    rows = max(cfg.algo.prompts_per_step * cfg.algo.group_size, cfg.eval.problems * cfg.eval.k)
    return {"max_num_seqs": min(512, rows)}


def _collect(engine, tok, stream, cfg: ZeroConfig, params, reward) -> tuple[list, int, int]:
    """One step's scored rollouts: prompts_per_step groups of group_size. With dynamic sampling
    (DAPO) groups whose rewards are all equal carry no gradient and are dropped, and more
    prompts are sampled to refill the batch, for at most `max_refills` extra rounds (a short
    batch trains as it is). Returns (rollouts, prompts consumed, groups dropped)."""
    G, want = cfg.algo.group_size, cfg.algo.prompts_per_step
    kept: list = []
    used = dropped = 0
    for _ in range(1 + (cfg.algo.max_refills if cfg.algo.dynamic_sampling else 0)):
        need = want - len(kept) // G
        if need <= 0:
            break
        examples = [next(stream) for _ in range(need)]
        used += need
        rollouts = generate_scored(engine, tok, examples, cfg.template, params, reward)
        if cfg.algo.overlong_buffer:
            lens = torch.tensor([len(r.completion_ids) for r in rollouts])
            pen = grpo.soft_overlong_penalty(
                lens, cfg.sampling.max_tokens, cfg.algo.overlong_buffer
            )
            for r, p in zip(rollouts, pen.tolist()):
                r.rewards["overlong"] = p
                r.reward += p
        for i in range(0, len(rollouts), G):
            group = rollouts[i : i + G]
            if cfg.algo.dynamic_sampling and len({r.reward for r in group}) == 1:
                dropped += 1
                continue
            kept.extend(group)
    if not kept:  # every group was degenerate: train on the last round (zero advantages)
        kept = rollouts
    return kept[: want * G], used, dropped


def _update(engine, trainer: GRPOTrainer, rollouts, device: str, engine_model=None) -> dict:
    """The update phase. On GPU the engine gives its KV cache back while the trainer runs; the
    engine shares the trainer's weight tensors (or copies them in place when its dtype differs),
    so after the step it samples from the new policy. Under torchrun the engine has its own
    full copy (`engine_model`), refilled from the trainer's shards."""
    asleep = torch.device(device).type == "cuda" and hasattr(engine, "sleep")
    if asleep:
        engine.sleep()
    upd = trainer.update(rollouts)
    sync(trainer.model, engine_model or trainer.model, engine)
    if asleep:
        engine.wake()
    return upd


def _checked(rewards: dict) -> float:
    return rewards.get("accuracy", rewards.get("code", rewards.get("code_fraction", 0.0)))


def _eval(engine, tok, problems, cfg: ZeroConfig, seed: int):
    params = SamplingParams(
        n=cfg.eval.k,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
        max_tokens=cfg.sampling.max_tokens,
        stop_token_ids=(tok.eos_token_id,),
        seed=seed,
    )
    return evaluate(engine, tok, problems, cfg.template, params)


def run_zero(cfg: ZeroConfig, resume: bool = False, progress: bool = True) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cfg.validate()
    out = Path(cfg.run.out)
    device = dist.init(device_of(cfg.run.device))  # under torchrun: this rank's device
    main = dist.is_main()  # rank 0 writes the run's files (every rank writes its shards)
    if main:
        _prepare_out(out)
    dist.barrier()
    console = Console(quiet=not progress or not main)
    reward = WeightedReward(parse_reward_spec(cfg.rewards))  # unknown names fail before loading
    problems = heldout(cfg.dataset, cfg.eval.problems, eval_file=cfg.eval_data)
    if not problems:
        raise R1kitError(
            f"no held-out problems in {cfg.eval_data or cfg.dataset}; pass --eval-data FILE.jsonl"
        )
    stream = train_stream(cfg.dataset, cfg.run.seed)
    sandbox.configure(unsafe=cfg.unsafe_exec)
    if any(n.startswith("code") for n in reward.weights) or any("tests" in p for p in problems):
        sandbox.shared()  # no sandbox works here and no --unsafe-exec: stop before any loading
    resolve_model(cfg.model)  # a bad model path fails here, before anything heavy loads
    t0 = time.time()
    ckpt = latest_checkpoint(out) if resume else None
    random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    tok = load_tokenizer(str(ckpt) if ckpt else cfg.model)
    set_template(tok, cfg.template)  # the model is saved with the format it is trained in
    dtype = None if cfg.run.dtype == "auto" else getattr(torch, cfg.run.dtype)
    if cfg.lora.rank:  # adapters on the base; a checkpoint holds them in its trainer state
        model = load_model(cfg.model, dtype=dtype, device=device)
        model = add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
        if ckpt:
            load_lora_state(
                model, torch.load(ckpt / "trainer_state.pt", weights_only=False)["lora"]
            )
    else:
        model = load_model(str(ckpt) if ckpt else cfg.model, dtype=dtype, device=device)
    ref = (
        load_model(cfg.model, dtype=dtype, device=device).eval().requires_grad_(False)
        if cfg.algo.beta > 0
        else None
    )
    engine_model = prepare(model, ref, lora=bool(cfg.lora.rank))  # torchrun: shards model
    trainer = GRPOTrainer(
        model,
        cfg.algo,
        cfg.optim,
        temperature=cfg.sampling.temperature,
        max_tokens=cfg.sampling.max_tokens,
        pad_id=tok.pad_token_id,
        ref_model=ref,
    )
    engine = make_engine(
        engine_model, pad_token_id=tok.pad_token_id, kind=cfg.run.engine, **_engine_kw(cfg)
    )
    start, wall_before, consumed = 0, 0.0, 0
    if ckpt:
        state = load_trainer_state(ckpt, trainer.optimizer, model)
        if (ckpt / "dcp").is_dir():  # weights came from the shards: into the engine too
            sync(model, engine_model, engine)
        start, wall_before = state["step"], state.get("wall_s", 0.0)
        trainer.step_count = start
        consumed = state["data_pos"]
        stream = itertools.islice(stream, consumed, None)
        console.print(f"resuming {out} from step {start}")
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    base_path = out / "base_eval.json"
    if base_path.exists() and resume:
        base = json.loads(base_path.read_text())
    else:
        console.print(
            f"evaluating the base model on {len(problems)} held-out problems x {cfg.eval.k}"
        )
        base, _ = _eval(engine, tok, problems, cfg, seed=cfg.run.seed + 1)
        if main:
            base_path.write_text(json.dumps(base, indent=2))
    console.print(
        f"base: pass@1 {base['pass1']:.3f}  pass@{cfg.eval.k} {base['passk']:.3f}  "
        f"format {base['format_rate']:.2f}"
    )

    metrics_path = out / "metrics.jsonl"
    kept = [m for m in read_metrics(metrics_path) if m["step"] <= start]  # drop rows past the ckpt
    if main:
        metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))
    params = SamplingParams(
        n=cfg.algo.group_size,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        max_tokens=cfg.sampling.max_tokens,
        stop_token_ids=(tok.eos_token_id,),
        logprobs=True,
    )
    cols = [
        TextColumn("[bold]zero"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    ]
    done = start
    with Progress(*cols, console=console, disable=not progress or not main) as bar:
        task = bar.add_task("", total=cfg.run.steps, completed=start)
        for step in range(start + 1, cfg.run.steps + 1):
            ts = time.time()
            rollouts, used, dropped = _collect(engine, tok, stream, cfg, params, reward)
            consumed += used
            tg = time.time()
            upd = _update(engine, trainer, rollouts, device, engine_model)
            row = {
                "step": step,
                "reward": sum(r.reward for r in rollouts) / len(rollouts),
                # the answer-checking reward: accuracy, or the code reward (tests passed)
                "accuracy": sum(_checked(r.rewards) for r in rollouts) / len(rollouts),
                "format": sum(r.rewards.get("format", 0) for r in rollouts) / len(rollouts),
                "response_len": sum(len(r.completion_ids) for r in rollouts) / len(rollouts),
                "reflection_rate": sum(r.reflects for r in rollouts) / len(rollouts),
                "truncated": sum(r.finish_reason == "length" for r in rollouts) / len(rollouts),
                "dropped_groups": dropped,
                **upd,
                "gen_s": round(tg - ts, 3),
                "train_s": round(time.time() - tg, 3),
            }
            if main:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            bar.update(
                task,
                advance=1,
                description=(
                    f"reward {row['reward']:.2f} acc {row['accuracy']:.2f} fmt {row['format']:.2f} "
                    f"len {row['response_len']:.0f}"
                ),
            )
            done = step
            out_of_time = 0 < cfg.run.time_limit_s <= wall_before + time.time() - t0
            out_of_time = dist.all_reduce(out_of_time, "max") > 0  # every rank stops together
            if step % cfg.run.save_every == 0 or step == cfg.run.steps or out_of_time:
                extra = {"data_pos": consumed, "wall_s": wall_before + time.time() - t0}
                if cfg.lora.rank:
                    extra["lora"] = lora_state(model)
                if dist.world() > 1:
                    save_sharded_checkpoint(
                        out, step, model, engine_model, tok, trainer.optimizer, extra
                    )
                else:
                    save_checkpoint(out, step, merged(model), tok, trainer.optimizer, extra)
            if out_of_time:  # --time-limit-s: stop here, evaluate what was trained
                break

    console.print("evaluating the trained model")
    final, rollouts = _eval(engine, tok, problems, cfg, seed=cfg.run.seed + 1)
    if main:  # under torchrun the engine's copy is the full model
        save_model(merged(model) if engine_model is model else engine_model, tok, out / "final")
        with (out / "samples.jsonl").open("w") as f:
            for r in rollouts:
                f.write(
                    json.dumps(
                        {"question": r.example["question"], "completion": r.text, **r.rewards}
                    )
                    + "\n"
                )
    summary = {
        "base_pass1": base["pass1"],
        "final_pass1": final["pass1"],
        "base_passk": base["passk"],
        "final_passk": final["passk"],
        "k": cfg.eval.k,
        "base_pass1_stderr": base["pass1_stderr"],
        "final_pass1_stderr": final["pass1_stderr"],
        "base_format_rate": base["format_rate"],
        "final_format_rate": final["format_rate"],
        "base_formatted_accuracy": base["formatted_accuracy"],
        "final_formatted_accuracy": final["formatted_accuracy"],
        "base_mean_length": base["mean_length"],
        "final_mean_length": final["mean_length"],
        "base_reflection_rate": base["reflection_rate"],
        "final_reflection_rate": final["reflection_rate"],
        "eval_problems": len(problems),
        "steps": done,
        "wall_s": round(wall_before + time.time() - t0, 1),
    }
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_report(read_metrics(metrics_path), out / "report.png", base, final)
    dist.barrier()
    return summary
