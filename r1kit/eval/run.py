"""The eval job: problems -> samples (written as they finish, resumable) -> grades ->
pass@1 with its standard error, unbiased pass@k, cons@k -> samples.jsonl and summary.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from r1kit import sandbox
from r1kit.config import EvalConfig
from r1kit.errors import R1kitError
from r1kit.eval.backends import GoldBackend, Params, Request, request_seed
from r1kit.eval.benchmarks import get_benchmark, load_problems
from r1kit.eval.code import get_code_benchmark, grade_code, is_code, load_code_problems
from r1kit.eval.local import LocalBackend
from r1kit.eval.remote import RemoteBackend
from r1kit.eval.report import published_for
from r1kit.eval.scoring import Grader
from r1kit.eval.store import SampleStore
from r1kit.sampling.metrics import cons_at_k, summarize
from r1kit.train import files


def make_backend(cfg: EvalConfig) -> GoldBackend | RemoteBackend | LocalBackend:
    if cfg.gold:
        return GoldBackend()
    url = cfg.url
    if url:
        model = cfg.model or (cfg.target if cfg.target and cfg.target != url else None)
        key = cfg.endpoint.api_key or os.environ.get("OPENAI_API_KEY")
        return RemoteBackend(url, key, model, cfg.endpoint.concurrency, cfg.endpoint.retries)
    if cfg.model:
        raise R1kitError("--model names an endpoint's model; pass a local model as MODEL_OR_URL")
    return LocalBackend(cfg.target, engine=cfg.engine, template=cfg.template)


def run_eval(cfg: EvalConfig, progress: bool = True, backend=None) -> dict:
    """Evaluate, resuming from `cfg.out`; returns the summary (also written to summary.json)."""
    cfg.validate()
    t0 = time.time()
    code = is_code(cfg.benchmark, cfg.columns.tests_field)
    if code:  # programs run against tests in the sandbox (eval/code.py)
        sandbox.configure(unsafe=cfg.unsafe_exec)
        sandbox.shared()  # none works here and no --unsafe-exec: stop before sampling
        bench = get_code_benchmark(
            cfg.benchmark, cfg.data, cfg.columns.question_field, cfg.columns.solution_field
        )
        problems = load_code_problems(
            bench, cfg.data, cfg.limit, cfg.columns.tests_field, cfg.columns.entry_point_field
        )
    else:
        bench = get_benchmark(
            cfg.benchmark,
            cfg.data,
            cfg.columns.question_field,
            cfg.columns.answer_field,
            cfg.columns.solution_field,
        )
        problems = load_problems(bench, cfg.data, cfg.limit)
    k = 1 if cfg.gold else (cfg.k or bench.k)
    out = Path(cfg.out or f"runs/eval/{bench.name}{'-gold' if cfg.gold else ''}")
    backend = backend or make_backend(cfg)
    seed = 0 if cfg.seed is None and backend.kind == "local" else cfg.seed
    setup = {
        "backend": backend.kind,
        "model": backend.name,
        "base_url": cfg.url if backend.kind == "remote" else None,
        "benchmark": bench.name,
        "data": str(Path(cfg.data).resolve()) if cfg.data else None,
        "question_field": cfg.columns.question_field,
        "answer_field": cfg.columns.answer_field,
        "solution_field": cfg.columns.solution_field,
        "template": backend.template,
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "max_tokens": cfg.sampling.max_tokens,
        "seed": seed,
        "k": k,
        "limit": cfg.limit,
    }
    try:
        store = SampleStore(out, setup)
    except BaseException:
        backend.close()
        raise
    try:
        requests = []
        for p in problems:
            have = store.done(p["id"])
            for start, n in contiguous_runs([j for j in range(k) if j not in have]):
                requests.append(Request(p, start, n, request_seed(seed, p["id"], start)))
        todo = sum(r.n for r in requests)
        resumed = len(problems) * k - todo
        if resumed and todo and progress:
            print(f"resuming: {resumed} of {len(problems) * k} samples already in {out}")
        params = Params(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_tokens)
        label = f"{bench.name}: {'references' if cfg.gold else 'sampling'}"
        with progress_bar(progress and todo > 0, todo, label) as advance:
            for batch in backend.generate(requests, params):
                store.add(batch)
                advance(len(batch))
        recs = [[store.records[(p["id"], j)] for j in range(k)] for p in problems]
        if code:
            grade_code(recs, problems, backend.template)
        else:
            _grade(recs, problems, backend.template, cfg.grade_timeout)
        store.rewrite({p["id"]: i for i, p in enumerate(problems)})
    finally:
        store.close()
        backend.close()
    summary = _summary(recs, bench.name, backend.name, backend.kind, k, cfg, seed)
    summary.update(generated=todo, resumed=resumed, wall_s=round(time.time() - t0, 2), out=str(out))
    if cfg.gold:  # which problems' references fail: a broken row, or the verifier's limit
        summary["wrong"] = [p["id"] for p, rs in zip(problems, recs) if not rs[0]["correct"]][:20]
    files.write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def contiguous_runs(idx: list[int]) -> list[tuple[int, int]]:
    """[0, 1, 2, 5, 6] -> [(0, 3), (5, 2)]: contiguous runs as (start, n)."""
    runs: list[tuple[int, int]] = []
    for j in idx:
        if runs and runs[-1][0] + runs[-1][1] == j:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((j, 1))
    return runs


def _grade(recs: list[list[dict]], problems: list[dict], template: str, timeout: float) -> None:
    todo = [(r, p) for p, rs in zip(problems, recs) for r in rs if "correct" not in r]
    if not todo:
        return
    # r1kit.grading's rule for the template; a procedural task's row goes to its checker
    with Grader(timeout, template=template) as grader:
        grades = grader.grade([(r["answer"], p.get("check", p["gold"])) for r, p in todo])
    for (r, p), g in zip(todo, grades):
        r.update(gold=p["gold"], parsed=g.parsed, correct=g.correct, vote_key=g.key)
        if g.timed_out:
            r["grade_timed_out"] = True


def _summary(recs, benchmark, model, kind, k, cfg: EvalConfig, seed) -> dict:
    flat = [r for rs in recs for r in rs]
    n = max(1, len(flat))
    m = summarize([[bool(r["correct"]) for r in rs] for rs in recs], k)
    pub = published_for(model, benchmark)
    return {
        "model": model,
        "benchmark": benchmark,
        "backend": kind,
        "k": k,
        "n_problems": len(recs),
        "n_samples": len(flat),
        "pass@1": m["pass1"],
        "pass@1_stderr": m["pass1_stderr"],
        "pass@k": m["passk"],
        "cons@k": cons_at_k([[(r["vote_key"], bool(r["correct"])) for r in rs] for rs in recs]),
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "max_tokens": cfg.sampling.max_tokens,
        "seed": seed,
        "tokens": sum(r["tokens"] or 0 for r in flat),
        "mean_tokens": sum(r["tokens"] or 0 for r in flat) / n,
        "truncated": sum(r["finish_reason"] == "length" for r in flat) / n,
        "no_answer": sum(r["parsed"] is None for r in flat) / n,
        "grade_timeouts": sum(bool(r.get("grade_timed_out")) for r in flat),
        "published": {"model": pub[0], **pub[1]} if pub else None,
    }


@contextmanager
def progress_bar(show: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A bar of `total` samples; yields advance(n). Not shown: advance does nothing."""
    if not show:
        yield lambda n: None
        return
    cols = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress("[progress.description]{task.description}", *cols) as prog:
        task = prog.add_task(label, total=total)
        yield lambda n: prog.advance(task, n)


# the old private names, until pipeline/distill.py imports the public ones
