"""The `r1kit sft` job: conversations -> packed, assistant-only next-token loss -> model.

OUT/config.json     the resolved SFTConfig (a resumed run reads it back)
OUT/metrics.jsonl   one row per optimizer step: loss, lr, tokens, grad norm
OUT/checkpoints/    crash-safe checkpoints (model + optimizer + data position)
OUT/final/          the fine-tuned model, HF format
OUT/summary.json    examples, steps, tokens, final loss, held-out before/after (when evaluated)

Loss: the mean negative log-likelihood over every assistant token of the optimizer batch (token
aggregation across micro-batches, so long and short examples weigh by their tokens). The
forward reuses the RL update's machinery: padding-free packed rows (`pack_tokens`) and the
chunked, checkpointed LM head of `train.batch.token_logprobs`.

Under `torchrun --nproc-per-node N` the same job runs data-parallel (r1kit/train/plan.py, r1kit/train/shard.py): the model
FSDP-sharded, each rank training on its share of every optimizer batch, gradients summed over
ranks so the step is the single-process one; evaluation split over the ranks; checkpoints
sharded (dcp/, resumable with any number of ranks); rank 0 writes the files above.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from r1kit import dist
from r1kit.chat import set_template
from r1kit.config import SFTConfig
from r1kit.errors import R1kitError
from r1kit.modeling import device_of, load_model, load_tokenizer, resolve_model, save_model
from r1kit.sampling.heldout import evaluate_model
from r1kit.sft.data import TRACES, Encoded, batches, encode_turns, load_conversations
from r1kit.train.batch import collate
from r1kit.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    save_sharded_checkpoint,
)
from r1kit.train.plan import micro_batches
from r1kit.train.shard import model_logprobs, shard, unshard


def lr_at(step: int, total: int, cfg: SFTConfig) -> float:
    """Linear warmup over warmup_ratio of the steps, then cosine down to lr * min_lr_ratio."""
    warm = int(total * cfg.optim.warmup_ratio)
    if step < warm:
        return cfg.optim.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = cfg.optim.min_lr_ratio
    return cfg.optim.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg: SFTConfig) -> torch.optim.Optimizer:
    """AdamW over the (sharded, under torchrun: build it after shard) parameters."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=(0.9, 0.95),
                             weight_decay=cfg.optim.weight_decay)  # fmt: skip


def train_step(model, optimizer, examples: list[Encoded], cfg: SFTConfig, pad_id: int, lr: float):
    """One optimizer step over `examples` (the whole batch; under torchrun every rank passes the
    same batch and trains its share of it); returns (mean loss, tokens, gnorm) of the batch."""
    n_tok = sum(len(e.completion_ids) for e in examples)  # all ranks' assistant tokens
    optimizer.zero_grad(set_to_none=True)
    for g in optimizer.param_groups:
        g["lr"] = lr
    total = 0.0
    for rows, w in micro_batches(
        examples, cfg.optim.micro_batch, lambda e: len(e.prompt_ids) + len(e.completion_ids)
    ):
        mb = collate(rows, pad_id)
        logp = model_logprobs(model, mb, 1.0, cfg.optim.pack_tokens)  # [n, T-1]
        loss = -(logp * mb.completion_mask.to(logp.device)).sum() / n_tok
        (loss * w if w != 1 else loss).backward()  # w: W ranks (FSDP averages), 0: padding pass
        total += loss.item() if w else 0.0
    total = dist.all_reduce(total)  # each rank holds its rows' part of the batch loss
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
    optimizer.step()
    return total, n_tok, dist.to_float(gn)  # sharded: gn is a DTensor


def _eval_problems(cfg: SFTConfig) -> list[dict]:
    from r1kit.data.datasets import heldout

    spec = cfg.eval_dataset or (cfg.data[len(TRACES) :] if cfg.data.startswith(TRACES) else None)
    if not spec or not cfg.eval.problems:
        return []
    return heldout(spec, cfg.eval.problems)


def run_sft(cfg: SFTConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cfg.validate()
    out = Path(cfg.run.out)
    device = dist.init(device_of(cfg.run.device))  # under torchrun: this rank's device
    main = dist.is_main()  # rank 0 writes the run's files (every rank writes its shards)
    console = Console(quiet=not progress or not main)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    resolve_model(cfg.model)
    t0 = time.time()
    ckpt = latest_checkpoint(out) if resume else None
    sharded = ckpt is not None and (ckpt / "dcp").is_dir()  # its weights come from dcp/
    if ckpt and not sharded and dist.world() > 1:
        raise R1kitError(f"{ckpt} was written by one process: resume it without torchrun")
    random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    tok = load_tokenizer(cfg.model)
    set_template(tok, cfg.template)  # the model is saved with the format it is trained in
    convs = load_conversations(cfg.data, cfg.split, cfg.max_examples, cfg.run.seed, cfg.template)
    encoded = [e for c in convs for e in encode_turns(c, tok, cfg.template)]  # every reply
    data = [e for e in encoded if len(e.prompt_ids) + len(e.completion_ids) <= cfg.max_len]
    dropped = len(encoded) - len(data)
    if not data:
        raise R1kitError(f"no SFT example fits --max-len {cfg.max_len} tokens")
    problems = _eval_problems(cfg)
    model = load_model(str(ckpt) if ckpt and not sharded else cfg.model, device=device)
    evals = {}
    base_path = out / "base_eval.json"
    if problems:  # before sharding: every rank's engine samples from its full model
        if resume and base_path.exists():
            evals["base"] = json.loads(base_path.read_text())
        else:
            console.print(f"evaluating the starting model on {len(problems)} held-out problems")
            evals["base"] = evaluate_model(model, tok, problems, cfg.template, cfg.eval.k,
                                           cfg.max_tokens, engine=cfg.run.engine,
                                           temperature=cfg.eval.temperature,
                                           top_p=cfg.eval.top_p)[0]  # fmt: skip
            if main:
                base_path.write_text(json.dumps(evals["base"], indent=2))
    shard(model)  # torchrun: FSDP-shards the model in place
    optimizer = make_optimizer(model, cfg)
    per_epoch = math.ceil(len(data) / cfg.optim.batch_size)
    total = per_epoch * cfg.optim.epochs
    start, wall_before = 0, 0.0
    if ckpt:
        state = load_trainer_state(ckpt, optimizer, model)  # dcp/: weights too, any rank count
        start, wall_before = state["step"], state.get("wall_s", 0.0)
        console.print(f"resuming {out} from step {start}")
    metrics_path = out / "metrics.jsonl"
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        rows = [json.loads(x) for x in metrics_path.read_text().splitlines()] if resume and metrics_path.exists() else []  # fmt: skip
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= start))
    console.print(f"{len(data)} examples ({dropped} longer than {cfg.max_len} dropped), "
                  f"{cfg.optim.epochs} epoch(s), {total} steps")  # fmt: skip
    cols = [TextColumn("[bold]sft"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), TextColumn("{task.description}")]  # fmt: skip
    model.train()
    step, loss = start, float("nan")
    with Progress(*cols, console=console, disable=not progress or not main) as bar:
        task = bar.add_task("", total=total, completed=start)
        for epoch in range(start // per_epoch, cfg.optim.epochs):
            for j, idx in enumerate(batches(len(data), cfg.optim.batch_size, cfg.run.seed, epoch)):
                if epoch * per_epoch + j < start:
                    continue  # resumed: this batch was trained before the checkpoint
                ts = time.time()
                lr = lr_at(step, total, cfg)
                loss, n_tok, gn = train_step(model, optimizer, [data[i] for i in idx], cfg,
                                             tok.pad_token_id, lr)  # fmt: skip
                step += 1
                row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "tokens": n_tok,
                       "grad_norm": gn, "step_s": round(time.time() - ts, 3)}  # fmt: skip
                if main:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                bar.update(task, advance=1, description=f"loss {loss:.3f} lr {lr:.2e}")
                if step % cfg.run.save_every == 0 or step == total:
                    extra = {"data_pos": step, "wall_s": wall_before + time.time() - t0}
                    if dist.world() > 1:  # dcp/ shards + trainer state; no HF weights
                        save_sharded_checkpoint(out, step, model, None, tok, optimizer, extra)
                    else:
                        save_checkpoint(out, step, model, tok, optimizer, extra)
    model.eval()
    if dist.world() > 1:  # every rank gathers the shards into a full copy to evaluate
        del optimizer
        model = unshard(model, cfg.model, device)
    if main:
        save_model(model, tok, out / "final")
    train_s = round(wall_before + time.time() - t0, 1)
    if problems:
        console.print("evaluating the fine-tuned model")
        evals["final"] = evaluate_model(model, tok, problems, cfg.template, cfg.eval.k,
                                        cfg.max_tokens, engine=cfg.run.engine,
                                           temperature=cfg.eval.temperature,
                                           top_p=cfg.eval.top_p)[0]  # fmt: skip
    dist.barrier()  # rank 0's metrics rows are on disk
    hist = [json.loads(x) for x in metrics_path.read_text().splitlines()]
    summary = {
        "examples": len(data),
        "dropped_too_long": dropped,
        "epochs": cfg.optim.epochs,
        "steps": step,
        "tokens_per_epoch": sum(len(e.completion_ids) for e in data),
        "first_loss": hist[0]["loss"] if hist else None,
        "final_loss": sum(h["loss"] for h in hist[-5:]) / max(1, len(hist[-5:])),
        "train_s": train_s,
        "wall_s": round(wall_before + time.time() - t0, 1),
        **{f"{k}_{m}": v[m] for k, v in evals.items() for m in
           ("pass1", "passk", "format_rate", "malformed_rate", "language_consistency")},
    }  # fmt: skip
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier()
    return summary
