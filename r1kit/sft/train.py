"""The `r1kit sft` job: conversations -> packed, assistant-only next-token loss -> model.

OUT/config.json     the resolved SFTConfig (a resumed run reads it back)
OUT/metrics.jsonl   one row per optimizer step: loss, lr, tokens, grad norm
OUT/checkpoints/    crash-safe checkpoints (model + optimizer + data position)
OUT/final/          the fine-tuned model, HF format
OUT/summary.json    examples, steps, tokens, final loss, held-out before/after (when evaluated)

Loss: the mean negative log-likelihood over every assistant token of the optimizer batch (token
aggregation across micro-batches, so long and short examples weigh by their tokens). The
forward is the training substrate's (train/): padding-free packed rows (`pack_tokens`) and the
chunked, checkpointed LM head of `train.batch.token_logprobs`, on the run skeleton of
`train.run.Run`.

Under `torchrun --nproc-per-node N` the same job runs data-parallel (train/plan.py,
train/shard.py): the model FSDP-sharded, each rank training on its share of every optimizer batch, gradients summed over
ranks so the step is the single-process one; evaluation split over the ranks; checkpoints
sharded (dcp/, resumable with any number of ranks); rank 0 writes the files above.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import torch

from r1kit import dist
from r1kit.chat import set_template
from r1kit.config import SFTConfig
from r1kit.config.parts import SFTOptim
from r1kit.data.datasets import heldout
from r1kit.data.fit import PromptFit, model_context
from r1kit.data.identity import entry, rows_digest
from r1kit.errors import R1kitError
from r1kit.modeling import device_of, load_model, load_tokenizer, resolve_model
from r1kit.sampling.heldout import evaluate_model
from r1kit.sft.data import TRACES, Encoded, Examples, batches, digest, load_conversations
from r1kit.train.batch import collate
from r1kit.train.checkpoint import load_trainer_state
from r1kit.train.finite import NonFiniteGuard
from r1kit.train.plan import micro_batches
from r1kit.train.run import Run
from r1kit.train.shard import model_logprobs, shard, unshard
from r1kit.train.skipped import skipped_steps


def lr_at(step: int, total: int, optim: SFTOptim) -> float:
    """Linear warmup over warmup_ratio of the steps, then cosine down to lr * min_lr_ratio."""
    warm = int(total * optim.warmup_ratio)
    if step < warm:
        return optim.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = optim.min_lr_ratio
    return optim.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, optim: SFTOptim) -> torch.optim.Optimizer:
    """AdamW over the (sharded, under torchrun: build it after shard) parameters."""
    return torch.optim.AdamW(
        model.parameters(), lr=optim.lr, betas=(0.9, 0.95), weight_decay=optim.weight_decay
    )


def train_step(
    model,
    optimizer,
    examples: list[Encoded],
    optim: SFTOptim,
    pad_id: int,
    lr: float,
    guard: NonFiniteGuard | None = None,
    step: int = 1,
) -> tuple[float, int, float]:
    """One optimizer step over `examples` (the whole batch; under torchrun every rank passes the
    same batch and trains its share of it); returns (mean loss, tokens, gnorm) of the batch.
    `guard` (train/finite.py; default: stop) checks it as the run's step `step`: a non-finite
    loss or gradient norm is never applied."""
    n_tok = sum(len(e.completion_ids) for e in examples)  # all ranks' assistant tokens
    optimizer.zero_grad(set_to_none=True)
    for g in optimizer.param_groups:
        g["lr"] = lr
    total = 0.0
    for rows, w in micro_batches(
        examples, optim.micro_batch, lambda e: len(e.prompt_ids) + len(e.completion_ids)
    ):
        mb = collate(rows, pad_id)
        logp = model_logprobs(model, mb, 1.0, optim.pack_tokens)  # [n, T-1]
        loss = -(logp * mb.completion_mask.to(logp.device)).sum() / n_tok
        (loss * w if w != 1 else loss).backward()  # w: W ranks (FSDP averages), 0: padding pass
        total += loss.item() if w else 0.0
    total = dist.all_reduce(total)  # each rank holds its rows' part of the batch loss
    gn = dist.to_float(torch.nn.utils.clip_grad_norm_(model.parameters(), optim.max_grad_norm))
    guard = guard or NonFiniteGuard("stop", lr=optim.lr)
    if guard.check(step, total, gn, optimizer):  # else: not applied (skip), or raised (stop)
        optimizer.step()
        guard.check_weights(step, optimizer)
    return total, n_tok, gn  # gn: sharded, a DTensor's full value


def _eval_problems(cfg: SFTConfig) -> list[dict]:
    spec = cfg.eval_dataset or (cfg.data[len(TRACES) :] if cfg.data.startswith(TRACES) else None)
    if not spec or not cfg.eval.problems:
        return []
    return heldout(spec, cfg.eval.problems)


def _evaluate(model, tok, problems: list[dict], cfg: SFTConfig) -> dict[str, float]:
    summary, _ = evaluate_model(
        model,
        tok,
        problems,
        cfg.template,
        cfg.eval.k,
        cfg.max_tokens,
        engine=cfg.run.engine,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
    )
    return summary


def _data(cfg: SFTConfig, tok) -> tuple[Examples, dict[str, Any]]:
    """Every assistant reply of the conversations as a training example, encoded when its batch
    is drawn (a large file streams: sft/data.py), and the data's entry in OUT/data.json."""
    convs = load_conversations(cfg.data, cfg.split, cfg.max_examples, cfg.run.seed, cfg.template)
    data = Examples(convs, tok, cfg.template, cfg.max_len)
    if not len(data):
        raise R1kitError(f"no SFT example in {cfg.data}")
    return data, entry(cfg.data, digest(convs), examples=len(data))


def run_sft(cfg: SFTConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    cfg.validate()
    device = dist.init(device_of(cfg.run.device))  # under torchrun: this rank's device
    with Run.of(cfg.run, "sft", resume, progress) as run:
        return _train(cfg, run, device)


def _train(cfg: SFTConfig, run: Run, device: str) -> dict[str, Any]:
    """run_sft inside its run directory (held, with its faults turned into one line)."""
    resolve_model(cfg.model)
    ckpt = run.checkpoint
    sharded = ckpt is not None and (ckpt / "dcp").is_dir()  # its weights come from dcp/
    if ckpt and not sharded and dist.world() > 1:
        raise R1kitError(f"{ckpt} was written by one process: resume it without torchrun")
    random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    tok = load_tokenizer(cfg.model)
    set_template(tok, cfg.template)  # the model is saved with the format it is trained in
    data, train_id = _data(cfg, tok)
    problems = _eval_problems(cfg)
    model = load_model(str(ckpt) if ckpt and not sharded else cfg.model, device=device)
    context = model_context(model)  # an example longer than --max-len or this is dropped
    data.max_len = min(cfg.max_len, context or cfg.max_len)
    if problems:  # held-out prompts that leave no room for --max-tokens are dropped, counted
        fit = PromptFit(tok, cfg.template, context, cfg.max_tokens)
        problems = fit.keep(problems, "held-out problems")
    source = cfg.eval_dataset or cfg.data
    held_id = {"heldout": entry(source, rows_digest(problems), problems=len(problems))}
    run.record_data({"train": train_id, **(held_id if problems else {})}, cfg.run.allow_data_change)
    evals = {}
    if problems:  # before sharding: every rank's engine samples from its full model
        evals["base"] = run.read_json("base_eval.json")
        if evals["base"] is None:
            run.console.print(f"evaluating the starting model on {len(problems)} held-out problems")
            evals["base"] = _evaluate(model, tok, problems, cfg)
            run.write_json("base_eval.json", evals["base"])
    shard(model)  # torchrun: FSDP-shards the model in place
    optimizer = make_optimizer(model, cfg.optim)
    per_epoch = math.ceil(len(data) / cfg.optim.batch_size)
    total = per_epoch * cfg.optim.epochs
    state = load_trainer_state(ckpt, optimizer, model) if ckpt else None  # dcp/: weights too
    start = run.resume_from(state)
    run.write_config(cfg.to_dict())
    run.console.print(
        f"{len(data)} examples, {cfg.optim.epochs} epoch(s), {total} steps; an example longer "
        f"than {data.max_len} tokens is dropped from its batch (counted)"
    )
    # epoch 0's counts (every example is drawn once an epoch), carried across a resume
    dropped = state.get("dropped_too_long", 0) if state else 0
    tokens0 = state.get("tokens_epoch0", 0) if state else 0
    model.train()
    step = start
    guard = NonFiniteGuard(cfg.run.nan_policy, lr=cfg.optim.lr, out=run.out)
    with run.bar(total, start) as bar:
        for epoch in range(start // per_epoch, cfg.optim.epochs):
            for j, idx in enumerate(batches(len(data), cfg.optim.batch_size, cfg.run.seed, epoch)):
                if epoch * per_epoch + j < start:
                    continue  # resumed: this batch was trained before the checkpoint
                ts = time.time()
                lr = lr_at(step, total, cfg.optim)
                rows, long = data.take(idx)  # encoded now, those over the length dropped
                loss, n_tok, gn = 0.0, 0, 0.0  # a batch of only over-long examples: no update
                if rows:
                    loss, n_tok, gn = train_step(
                        model, optimizer, rows, cfg.optim, tok.pad_token_id, lr, guard, step + 1
                    )
                if epoch == 0:
                    dropped, tokens0 = dropped + long, tokens0 + n_tok
                step += 1
                row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "tokens": n_tok}
                row.update(grad_norm=gn, step_s=round(time.time() - ts, 3), dropped_too_long=long)
                row["nonfinite_skipped"] = guard.take_skipped()  # --nan-policy skip
                run.log(row)
                bar.advance(f"loss {loss:.3f} lr {lr:.2e}")
                if run.due(step, total, cfg.run.save_every, run.stopping()):
                    # under torchrun: dcp/ shards + trainer state, no HF weights
                    # (after SIGTERM the save raises Stopped: the run ends there)
                    counts = {"dropped_too_long": dropped, "tokens_epoch0": tokens0}
                    run.save(step, model, tok, optimizer, {"data_pos": step, **counts})
    run.finishing()  # a stop signal from here on: --resume redoes only what follows
    model.eval()
    if dist.world() > 1:  # every rank gathers the shards into a full copy to evaluate
        del optimizer
        model = unshard(model, cfg.model, device)
    if run.main:
        run.save_final(model, tok)
    train_s = round(run.wall(), 1)
    if problems:
        run.console.print("evaluating the fine-tuned model")
        evals["final"] = _evaluate(model, tok, problems, cfg)
    metrics = run.metrics()
    hist = [h for h in metrics if h["tokens"]]  # steps that trained on something
    last = hist[-5:]
    evaluated = ("pass1", "passk", "format_rate", "malformed_rate", "language_consistency")
    summary = {
        "examples": len(data) - dropped,
        "dropped_too_long": dropped,
        "epochs": cfg.optim.epochs,
        "steps": step,
        "tokens_per_epoch": tokens0,
        "first_loss": hist[0]["loss"] if hist else None,
        "final_loss": sum(h["loss"] for h in last) / max(1, len(last)),
        "train_s": train_s,
        "wall_s": round(run.wall(), 1),
        **{f"{k}_{m}": v[m] for k, v in evals.items() for m in evaluated},
        **skipped_steps(metrics),  # --nan-policy skip: steps not applied
    }
    return run.finish(summary)
