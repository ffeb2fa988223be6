"""Pretrain a small Qwen2-architecture base model on the procedural corpus.

Documents are packed into fixed blocks (BOS doc EOS BOS doc EOS ...) and trained with plain
next-token loss, AdamW and a warmup + cosine schedule. With a fixed seed, the same torch build and
the same thread count, the run is bit-for-bit repeatable.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from r1kit.chat import set_template
from r1kit.data.corpus import documents
from r1kit.data.tasks import MIX_TASKS
from r1kit.modeling import save_model
from r1kit.pretrain.presets import PRESETS, PretrainConfig  # noqa: F401 (PRESETS: read from here too)
from r1kit.pretrain.tokenizer import train_tokenizer
from r1kit.train.finite import NonFiniteGuard, require_finite
from r1kit.train.run import Run


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def packed_blocks(tok, seed: int, block_len: int, batch_size: int, tasks=MIX_TASKS):
    """Endless [batch, block_len] LongTensors of packed documents."""
    docs, buf = documents(seed + 1, tasks), []
    while True:
        while len(buf) < block_len * batch_size:
            texts = list(itertools.islice(docs, 256))
            for ids in tok(texts, add_special_tokens=True).input_ids:
                buf.extend(ids + [tok.eos_token_id])
        n = block_len * batch_size
        chunk, buf = buf[:n], buf[n:]
        yield torch.tensor(chunk).view(batch_size, block_len)


def build_model(cfg: PretrainConfig, tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def _save_in_place(model, tok, out: Path) -> None:
    """The model and tokenizer into OUT itself (OUT is the model directory), written to a temp
    directory first and moved in with the weights last: OUT/model.safetensors exists only once
    every other file is complete (what `r1kit zero --preset` checks before reusing a base)."""
    tmp = out / ".tmp-model"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tok, tmp)
    weights = sorted(tmp.glob("*.safetensors"))
    for path in [p for p in tmp.iterdir() if p not in weights] + weights:
        os.replace(path, out / path.name)
    tmp.rmdir()


def pretrain(cfg: PretrainConfig, progress: bool = True) -> dict:
    """Train tokenizer + model, save both to cfg.out, return a summary dict.

    OUT/*               the model and tokenizer, HF format (so OUT/config.json is the model's)
    OUT/metrics.jsonl   loss and learning rate per step
    OUT/pretrain.json   the summary: the PretrainConfig, the weights' sha256 (r1kit/assets/tiny
                        has the shipped one), the final loss
    """
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(cfg.device == "cpu")
    # no checkpoints: a run starts over (with --overwrite when OUT holds an earlier one)
    with Run(
        cfg.out, "pretrain", progress=progress, overwrite=cfg.overwrite, checkpoints=False
    ) as run:
        return _train(cfg, run)


def _train(cfg: PretrainConfig, run: Run) -> dict:
    """pretrain inside its run directory (held, with its faults turned into one line)."""
    run.resume_from(None)
    corpus = documents(cfg.seed, tuple(cfg.tasks))
    tok = train_tokenizer(itertools.islice(corpus, cfg.tokenizer_docs), cfg.vocab_size)
    model = build_model(cfg, tok).to(cfg.device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay
    )
    batches = packed_blocks(tok, cfg.seed, cfg.block_len, cfg.batch_size, tuple(cfg.tasks))
    losses = []
    guard = NonFiniteGuard(cfg.nan_policy, lr=cfg.lr)
    with run.bar(cfg.steps) as bar:
        for step in range(cfg.steps):
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            x = next(batches).to(cfg.device)
            with torch.autocast("cuda", torch.bfloat16, enabled=cfg.device.startswith("cuda")):
                loss = model(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            losses.append(loss.item())
            if guard.check(step + 1, losses[-1], gn, opt):  # a non-finite step is never applied
                opt.step()
                guard.check_weights(step + 1, opt)
            row = {"step": step + 1, "loss": round(losses[-1], 4), "lr": lr}
            run.log({**row, "nonfinite_skipped": guard.take_skipped()})
            bar.advance(f"loss {losses[-1]:.3f}")
    model.generation_config.do_sample = True
    set_template(tok, "r1zero")  # the corpus is R1-Zero prompts and completions
    require_finite(model, f"the model in {run.out}", agree=False)
    _save_in_place(model.cpu(), tok, run.out)
    summary = {
        "config": asdict(cfg),
        "params": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "tokens": cfg.steps * cfg.batch_size * cfg.block_len,
        "wall_s": round(run.wall(), 1),
        "torch": torch.__version__,
        # compare with r1kit/assets/tiny/pretrain.json to check a rebuild reproduced the weights
        "weights_sha256": hashlib.sha256((run.out / "model.safetensors").read_bytes()).hexdigest(),
    }
    run.write_json("pretrain.json", summary)
    return summary
