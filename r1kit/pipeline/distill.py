"""The `r1kit distill` job: a teacher answers a prompt set with reasoning; answers are verified
and filtered like rejection samples; the kept traces fine-tune a (smaller) student.

OUT/teacher/samples.jsonl  every teacher answer, written as it arrives: a re-run after an
                           interruption asks only for the missing ones (nothing paid twice)
OUT/teacher/config.json    what the answers were drawn with (a different teacher is refused)
OUT/traces.jsonl           the kept traces as SFT data in the student's template
OUT/student-init/          the truncated student (with --student-layers)
OUT/student/               the student's SFT run (final/, metrics, held-out before/after)
OUT/summary.json           teacher stats, token usage and estimated cost, student pass@1
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from r1kit import dist
from r1kit.chat import THINK_CLOSE, THINK_OPEN, user_message
from r1kit.config import DistillConfig, SFTConfig
from r1kit.config.parts import TrainRun
from r1kit.data.datasets import train_stream
from r1kit.errors import R1kitError
from r1kit.eval.backends import Params, Request, request_seed
from r1kit.eval.run import contiguous_runs, progress_bar
from r1kit.eval.store import SampleStore
from r1kit.grading import extract
from r1kit.modeling import device_of
from r1kit.pipeline.student import shrink
from r1kit.pipeline.teacher import make_teacher
from r1kit.rewards.rules import accuracy
from r1kit.sampling.filters import FILTERS, Limits, failures
from r1kit.sft.data import r1zero_completion
from r1kit.sft.train import run_sft
from r1kit.train.run import Run


def prompt_set(cfg: DistillConfig) -> list[dict]:
    """`prompts` distinct train-split problems, each with a stable id (hash of the question)."""
    seen: dict[str, dict] = {}
    for ex in itertools.islice(train_stream(cfg.dataset, cfg.run.seed + 303), cfg.prompts * 4):
        pid = hashlib.sha1(ex["question"].encode()).hexdigest()[:12]
        seen.setdefault(pid, {**ex, "id": pid})
        if len(seen) == cfg.prompts:
            break
    return list(seen.values())


def collect(cfg: DistillConfig, problems: list[dict], progress: bool) -> tuple[list, dict]:
    """Teacher records for every (problem, sample), from the cache or the teacher."""
    teacher = make_teacher(cfg)
    setup = {
        "backend": teacher.kind,
        "model": teacher.name,
        "base_url": cfg.url,
        "data": cfg.dataset,
        "template": teacher.template,
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "max_tokens": cfg.sampling.max_tokens,
        "seed": cfg.run.seed,
    }
    try:
        store = SampleStore(Path(cfg.run.out) / "teacher", setup)
    except BaseException:
        teacher.close()
        raise
    try:
        reqs = [
            Request(p, s, n, request_seed(cfg.run.seed, p["id"], s))
            for p in problems
            for s, n in contiguous_runs([j for j in range(cfg.k) if j not in store.done(p["id"])])
        ]
        todo = sum(r.n for r in reqs)
        new: list[dict] = []
        with progress_bar(progress and todo > 0, todo, f"teacher {teacher.name}") as advance:
            params = Params(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_tokens)
            for batch in teacher.generate(reqs, params):
                store.add(batch)
                new += batch
                advance(len(batch))
        recs = [store.records[(p["id"], j)] for p in problems for j in range(cfg.k)]
    finally:
        store.close()
        teacher.close()
    usage = {"requests_now": len(new), "cached": len(recs) - len(new)}
    for label, rows in (("now", new), ("total", recs)):
        pt = sum(r.get("prompt_tokens") or 0 for r in rows)
        ct = sum(r.get("tokens") or 0 for r in rows)
        usage[f"prompt_tokens_{label}"], usage[f"completion_tokens_{label}"] = pt, ct
        usage[f"cost_usd_{label}"] = round(
            (pt * cfg.price_prompt + ct * cfg.price_completion) / 1e6, 6
        )
    usage["teacher_template"] = setup["template"]
    return recs, usage


def student_template_of(cfg: DistillConfig, teacher_template: str) -> str:
    """The student learns in --template, or by default in the teacher's own format."""
    return teacher_template if cfg.template == "auto" else cfg.template


def to_traces(cfg: DistillConfig, problems: list[dict], recs: list[dict], template: str) -> tuple:
    """Verify and filter teacher answers; return (SFT rows in the student's template, stats)."""
    by_id = {p["id"]: p for p in problems}
    student_template = student_template_of(cfg, template)
    removed = dict.fromkeys(["no_reasoning", *FILTERS, "duplicate"], 0)
    rows, seen = [], set()
    for r in recs:
        ex = {**by_id[r["problem_id"]], "template": template}
        if not (r.get("reasoning") or "").strip():
            removed["no_reasoning"] += 1
            continue
        text = f"{THINK_OPEN}{r['reasoning']}{THINK_CLOSE}" + (
            "" if r["answer"] is None else f" {r['answer']}"
        )
        fails = failures(
            text, ex, r.get("finish_reason") or "stop", Limits(), correct=accuracy(text, ex) > 0
        )
        key = (r["problem_id"], " ".join(r["reasoning"].split()))
        if not fails and key in seen:
            fails = ["duplicate"]
        if fails:
            removed[fails[0]] += 1
            continue
        seen.add(key)
        final = extract(r["answer"], template)  # what the reward graded
        content = (
            r1zero_completion(r["reasoning"], final)
            if student_template == "r1zero"
            else f"{THINK_OPEN}\n{r['reasoning'].strip()}\n{THINK_CLOSE}\n\n{r['answer'].strip()}"
        )
        question = user_message(ex["question"]) if student_template == "chat" else ex["question"]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": content},
                ],
                "question": ex["question"],
                "answer": ex.get("answer"),
            }
        )
    return rows, {"answers": len(recs), "kept": len(rows), "removed": removed}


def run_distill(cfg: DistillConfig, progress: bool = True) -> dict[str, Any]:
    """Teacher, filters and traces on rank 0 alone under torchrun (a teacher is asked once),
    then the student's SFT (r1kit sft's job) data-parallel on every rank."""
    cfg.validate()
    dist.init(device_of(cfg.run.device))  # torchrun: join before rank 0 runs the teacher alone
    # a re-run continues in OUT: its phases are reused or redone (never a silent overwrite)
    with Run(
        cfg.run.out,
        "distill",
        resume=True,
        progress=progress,
        overwrite=cfg.run.overwrite,
        checkpoints=False,
    ) as run:
        return _distill(cfg, run, progress)


def _distill(cfg: DistillConfig, run: Run, progress: bool) -> dict[str, Any]:
    """run_distill inside its run directory (held, with its faults turned into one line)."""
    out = run.out
    summary, student = dist.on_main(lambda: _traces_and_student(cfg, progress and dist.is_main()))
    if cfg.optim.epochs:
        # the student's SFT: this job's optimizer and held-out evaluation as they are
        sft = SFTConfig(
            model=student,
            data=str(out / "traces.jsonl"),
            template=student_template_of(cfg, summary["usage"]["teacher_template"]),
            eval_dataset=cfg.dataset,
            max_tokens=cfg.sampling.max_tokens,
            run=TrainRun(
                out=str(out / "student"),
                seed=cfg.run.seed,
                device=cfg.run.device,
                engine=cfg.run.engine,
            ),
            optim=replace(cfg.optim),
            eval=replace(cfg.eval),
        )
        summary["student"] = run_sft(
            sft, resume=(out / "student" / "checkpoints").exists(), progress=progress
        )
    summary["wall_s"] = round(run.wall(), 1)
    return run.finish(summary)


def _traces_and_student(cfg: DistillConfig, progress: bool) -> tuple[dict[str, Any], str | None]:
    """Teacher answers -> verified traces.jsonl (+ the truncated student); returns the summary so
    far and the student to fine-tune."""
    console = Console(quiet=not progress)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    problems = prompt_set(cfg)
    recs, usage = collect(cfg, problems, progress)
    t_teacher = time.time() - t0
    rows, stats = to_traces(cfg, problems, recs, usage["teacher_template"])
    no_r = stats["removed"]["no_reasoning"]
    if no_r == len(recs):
        raise R1kitError(
            f"the teacher returned no reasoning in any of its {len(recs)} answers "
            "(no reasoning_content and no <think> block): is it a reasoning model?"
        )
    if no_r:
        console.print(
            f"[yellow]warning: {no_r} of {len(recs)} teacher answers had no reasoning "
            "and were not used"
        )
    with (out / "traces.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary: dict[str, Any] = {
        "teacher": cfg.url or cfg.teacher or "embedded",
        "prompts": len(problems),
        **stats,
        "usage": usage,
        "teacher_s": round(t_teacher, 1),
    }
    if not rows and cfg.optim.epochs:
        raise R1kitError(f"no teacher answer passed verification and the filters; see {out}")
    student = cfg.student
    if cfg.student_layers and cfg.optim.epochs:
        summary["student_init"] = shrink(cfg.student, cfg.student_layers, out / "student-init")
        student = str(out / "student-init")
    return summary, student


def print_distill(s: dict[str, Any], out: str) -> None:
    c = Console()
    u = s["usage"]
    c.print(
        f"teacher {s['teacher']}: {s['answers']} answers for {s['prompts']} prompts "
        f"({u['cached']} from the cache), {s['kept']} kept"
    )
    c.print("removed: " + ", ".join(f"{k} {v}" for k, v in s["removed"].items() if v))
    c.print(
        f"tokens this run: {u['prompt_tokens_now']:,} prompt + {u['completion_tokens_now']:,} "
        f"completion = ${u['cost_usd_now']:.4f}; whole prompt set ${u['cost_usd_total']:.4f}"
    )
    st = s.get("student")
    if st and "final_pass1" in st:
        c.print(
            f"student held-out pass@1 {st['base_pass1']:.3f} -> {st['final_pass1']:.3f} "
            f"({st['steps']} SFT steps)"
        )
    c.print(f"wrote {out}/summary.json, {out}/traces.jsonl, {out}/student/final/")
