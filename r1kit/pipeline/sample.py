"""The `r1kit sample` job (rejection sampling, DeepSeek-R1 2.3.3): k completions per prompt
from the engine; keep those that are verified correct and pass every readability filter;
drop duplicates; write SFT JSONL and a report of what each filter removed.

OUT/sft.jsonl       kept samples: {"messages": [user, assistant], "question", "answer", "task"}
OUT/rejected.jsonl  the rest, with the filters each failed (the reward model's negatives)
OUT/stats.json      prompts, samples, kept, removed per filter (first failure and any failure)
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from r1kit import sandbox
from r1kit.chat import resolve_template, set_template, user_message
from r1kit.config import SampleConfig
from r1kit.data.datasets import train_stream
from r1kit.data.fit import PromptFit, model_context
from r1kit.engine import SamplingParams, make_engine
from r1kit.errors import R1kitError
from r1kit.modeling import device_of, load_model, load_tokenizer
from r1kit.rewards.rules import accuracy
from r1kit.sampling.filters import FILTERS, Limits, failures
from r1kit.sampling.rollout import generate
from r1kit.sft.data import THINK_OPEN
from r1kit.train import files


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def assistant_text(completion: str, template: str) -> str:
    """The assistant message for SFT: the think block opened explicitly (the prompt opened it)."""
    body = completion.lstrip()
    if body.startswith(THINK_OPEN):
        return body
    return THINK_OPEN + (completion if template == "r1zero" else "\n" + completion)


def select(rollouts: list, limits: Limits, keep_per_prompt: int, k: int) -> dict[str, Any]:
    """Judge each rollout; return kept/rejected rows and the per-filter counts."""
    first = dict.fromkeys([*FILTERS, "duplicate"], 0)
    anyf = dict.fromkeys([*FILTERS, "duplicate"], 0)
    kept, rejected = [], []
    accuracy.prepare([r.text for r in rollouts], [r.example for r in rollouts])  # code: parallel
    for i in range(0, len(rollouts), k):
        seen: set[str] = set()
        n_kept = 0
        for r in rollouts[i : i + k]:
            ok = accuracy(r.text, r.example) > 0
            fails = failures(r.text, r.example, r.finish_reason, limits, correct=ok)
            if not fails and (_norm(r.text) in seen or n_kept >= keep_per_prompt):
                fails = ["duplicate"]
            for f in fails:
                anyf[f] += 1
            ex = r.example
            row = {
                **{k: v for k, v in ex.items() if k != "template"},  # the task's fields
                "completion": r.text,
                "tokens": len(r.completion_ids),
            }
            if fails:
                first[fails[0]] += 1
                rejected.append({**row, "failed": fails})
                continue
            seen.add(_norm(r.text))
            n_kept += 1
            chat = ex["template"] == "chat"  # asked as the rollout asked it
            question = user_message(ex["question"]) if chat else ex["question"]
            msgs = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": assistant_text(r.text, ex["template"])},
            ]
            kept.append({"messages": msgs, **row})
    return {"kept": kept, "rejected": rejected, "first": first, "any": anyf}


def run_sample(cfg: SampleConfig, progress: bool = True) -> dict[str, Any]:
    cfg.validate()
    sandbox.configure(unsafe=cfg.unsafe_exec)  # code problems: only passing programs are kept
    console = Console(quiet=not progress)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(cfg.run.seed)
    examples = list(itertools.islice(train_stream(cfg.dataset, cfg.run.seed + 101), cfg.prompts))
    # distinct prompts only: a JSONL dataset cycles through epochs
    examples = list({ex["question"]: ex for ex in examples}.values())
    model = load_model(cfg.model, device=device_of(cfg.run.device)).eval()
    tok = load_tokenizer(cfg.model)
    cfg.template = resolve_template(tok, cfg.template)  # auto: the model's own format
    set_template(tok, cfg.template)
    engine = make_engine(
        model,
        pad_token_id=tok.pad_token_id,
        kind=cfg.run.engine,
        **({} if cfg.run.engine == "hf" else {"max_num_seqs": 512}),
    )
    # prompts too long for the context (with room for --max-tokens): dropped, counted
    fit = PromptFit(tok, cfg.template, model_context(model, engine), cfg.sampling.max_tokens)
    examples = fit.keep(examples, "prompts")
    params = SamplingParams(
        n=cfg.k,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        max_tokens=cfg.sampling.max_tokens,
        stop_token_ids=(tok.eos_token_id,),
        seed=cfg.run.seed,
    )
    rollouts = []
    chunk = max(1, 512 // cfg.k)
    with Progress(console=console, disable=not progress) as bar:
        task = bar.add_task("sampling", total=len(examples))
        for i in range(0, len(examples), chunk):
            batch = examples[i : i + chunk]
            rollouts += generate(engine, tok, batch, cfg.template, params)
            bar.advance(task, len(batch))
    res = select(rollouts, Limits.of(cfg.filters), cfg.keep_per_prompt, cfg.k)
    for name, rows in (("sft.jsonl", res["kept"]), ("rejected.jsonl", res["rejected"])):
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        files.write_text(out / name, text)  # atomic: a kill never leaves half the samples
    n = len(rollouts)
    stats = {
        "prompts": len(examples),
        "samples": n,
        "kept": len(res["kept"]),
        "kept_rate": len(res["kept"]) / max(1, n),
        "prompts_with_a_kept_sample": len({r["question"] for r in res["kept"]}),
        "removed_first": res["first"],  # each sample counted once, by its first failed filter
        "failed_any": res["any"],  # a sample counted under every filter it fails
        "wall_s": round(time.time() - t0, 1),
    }
    files.write_json(out / "stats.json", stats)
    files.write_json(out / "config.json", cfg.to_dict())
    if not res["kept"]:
        raise R1kitError(f"no sample passed verification and the filters; see {out}/stats.json")
    return stats


def print_stats(stats: dict[str, Any], out: str) -> None:
    t = Table(title=f"rejection sampling: {stats['samples']} samples of {stats['prompts']} prompts")
    t.add_column("filter")
    t.add_column("removed (first failure)", justify="right")
    t.add_column("failed (any)", justify="right")
    for name, v in stats["removed_first"].items():
        t.add_row(name, str(v), str(stats["failed_any"][name]))
    t.add_row("[bold]kept", f"[bold]{stats['kept']}", f"{stats['kept_rate']:.1%}")
    Console().print(t)
    Console().print(f"wrote {out}/sft.jsonl, {out}/rejected.jsonl, {out}/stats.json")
