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
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from r1kit import dist
from r1kit.chat import THINK_CLOSE, THINK_OPEN, user_message
from r1kit.config import DistillConfig, SFTConfig
from r1kit.config.parts import TrainRun
from r1kit.data.datasets import heldout, train_stream
from r1kit.data.fit import PromptFit, model_context
from r1kit.errors import R1kitError, Stopped
from r1kit.eval.backends import Params, Request, request_seed
from r1kit.eval.run import contiguous_runs, progress_bar
from r1kit.eval.store import SAMPLE_SETTINGS, SampleStore
from r1kit.grading import extract
from r1kit.modeling import device_of, load_model, load_tokenizer
from r1kit.pipeline.cache import (
    Plan,
    decide,
    final_problem,
    identity,
    key_of,
    new_output_id,
    read_marker,
    result_fields,
    resumable,
    write_marker,
)
from r1kit.pipeline.student import check_student, shrink
from r1kit.pipeline.teacher import LocalTeacher, make_teacher
from r1kit.rewards.rules import accuracy
from r1kit.sampling.filters import FILTERS, Limits, failures
from r1kit.sampling.heldout import evaluate_model
from r1kit.sft.data import r1zero_completion
from r1kit.sft.train import run_sft
from r1kit.train import files
from r1kit.train.checkpoint import latest_checkpoint
from r1kit.train.run import Run

# the held-out metrics reported for the student before and after its SFT (as r1kit sft's)
EVALUATED = ("pass1", "passk", "format_rate", "malformed_rate", "language_consistency")
# SFTConfig fields that only shape its held-out evaluation, which distill keys on its own
EVAL_ONLY = (
    "eval_dataset",
    "max_tokens",
    "eval_problems",
    "eval_k",
    "eval_temperature",
    "eval_top_p",
)


def prompt_set(cfg: DistillConfig) -> list[dict]:
    """`prompts` distinct train-split problems, each with a stable id (hash of the question)."""
    seen: dict[str, dict] = {}
    for ex in itertools.islice(train_stream(cfg.dataset, cfg.run.seed + 303), cfg.prompts * 4):
        pid = hashlib.sha1(ex["question"].encode()).hexdigest()[:12]
        seen.setdefault(pid, {**ex, "id": pid})
        if len(seen) == cfg.prompts:
            break
    return list(seen.values())


def drop_stale_answers(tdir: Path, setup: dict[str, Any], kind: str, progress: bool) -> None:
    """A local teacher's cached answers drawn with another setup (another model or its weights
    changed, other sampling settings) are stale: removed, with one line saying why, and asked
    again (they cost nothing). An endpoint's are kept, and SampleStore refuses in one line:
    answers that cost money are never thrown away silently."""
    old = read_marker(tdir / "config.json")
    samples = tdir / "samples.jsonl"
    if kind != "local" or not old or not samples.exists():
        return
    diff = [k for k in SAMPLE_SETTINGS if old.get(k) != setup.get(k)]
    if diff:
        what = ", ".join(f"{k} {old.get(k)!r} -> {setup.get(k)!r}" for k in diff[:2])
        Console(quiet=not progress).print(
            f"teacher: {what}: its cached answers are dropped", soft_wrap=True
        )  # one line, whatever the paths' length
        samples.unlink()


def collect(cfg: DistillConfig, problems: list[dict], progress: bool) -> tuple[list, dict]:
    """Teacher records for every (problem, sample), from the cache or the teacher."""
    teacher = make_teacher(cfg)
    if isinstance(teacher, LocalTeacher):  # prompts too long for its context: dropped, counted
        context = model_context(teacher.model, teacher.engine)
        fit = PromptFit(teacher.tok, teacher.template, context, cfg.sampling.max_tokens)
        problems = fit.keep(problems, "distillation prompts")
    setup = {
        "backend": teacher.kind,
        # a local teacher by its files too: a run directory retrained since is a new teacher
        "model": identity(teacher.name) if isinstance(teacher, LocalTeacher) else teacher.name,
        "base_url": cfg.url,
        "data": cfg.dataset,
        "template": teacher.template,
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "max_tokens": cfg.sampling.max_tokens,
        "seed": cfg.run.seed,
    }
    try:
        drop_stale_answers(Path(cfg.run.out) / "teacher", setup, teacher.kind, progress)
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
    then the student's SFT (r1kit sft's job) data-parallel on every rank. Each phase is reused
    when its key (pipeline/cache.py) is unchanged: the teacher's answers per (prompt, sample),
    the truncated student by (student, layers), the student's SFT by its config and the traces'
    content; a changed --lr or --epochs trains the student again."""
    cfg.validate()
    if cfg.optim.epochs:  # a bad --student fails now, not after the teacher phase
        check_student(cfg.student, cfg.student_layers)
    dist.init(device_of(cfg.run.device))  # torchrun: join before rank 0 runs the teacher alone
    # a re-run continues in OUT: its phases are reused or redone (never a silent overwrite);
    # --overwrite replaces the whole run, the teacher's answers included. Run refuses another
    # job's run without --overwrite, and a directory of other files with or without it
    with Run(
        cfg.run.out,
        "distill",
        resume=not cfg.run.overwrite,
        progress=progress,
        overwrite=cfg.run.overwrite,
        checkpoints=False,
    ) as run:
        return _distill(cfg, run, progress)


def _distill(cfg: DistillConfig, run: Run, progress: bool) -> dict[str, Any]:
    """run_distill inside its run directory (held, with its faults turned into one line)."""
    out = run.out
    run.write_config(cfg.to_dict())  # what `r1kit distill --resume OUT` continues with
    summary, student, student_id = dist.on_main(
        lambda: _traces_and_student(cfg, progress and dist.is_main())
    )
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
                save_every=cfg.run.save_every,
                keep_last=cfg.run.keep_last,
                nan_policy=cfg.run.nan_policy,
            ),
            optim=replace(cfg.optim),
            eval=replace(cfg.eval, problems=0),  # evaluated below, under its own key
        )
        trained, output_id = train_student(sft, student_id, summary["traces_sha256"], run)
        final = str(out / "student" / "final")
        evals = evaluate_student(cfg, sft.template, student, student_id, final, output_id, run)
        summary["student"] = {**trained, **evals}
    summary["wall_s"] = round(run.wall(), 1)
    return run.finish(summary)


def train_student(
    sft: SFTConfig, student_id: Any, traces_id: str, run: Run
) -> tuple[dict[str, Any], str]:
    """The student's SFT (OUT/student), reused when the key of its config, its starting model
    and the traces' content is the one OUT/student.json records; resumed from its checkpoint
    when an interrupted attempt had this key; else trained afresh in an emptied OUT/student.
    Returns its summary and its output id (what the final evaluation is keyed by)."""
    record_path = run.out / "student.json"
    flat = {k: v for k, v in sft.to_flat().items() if k not in ("model", "data", *EVAL_ONLY)}
    inputs = {"config": result_fields(flat), "student": student_id, "traces": traces_id}
    key = key_of(inputs)
    sdir = Path(sft.run.out)

    def prepare() -> tuple[Plan, dict[str, Any] | None]:  # rank 0 decides and clears
        record = read_marker(record_path)
        ok = final_problem(sdir) is None  # complete: the final evaluation loads it
        can_resume = latest_checkpoint(sdir) is not None
        plan = decide(record, key, inputs, ok, can_resume, sdir.exists())
        if plan.action == "resume" and not resumable(sdir):  # sha256-checked only now
            plan = Plan("run", "interrupted, and none of its checkpoints is intact")
        line = {
            "reuse": f"student: reused: {plan.why}",
            "resume": f"student: {plan.why}: resuming its SFT from the checkpoint",
            "run": f"student: {plan.why}: training it",
        }[plan.action]
        run.console.print(line)
        if plan.action == "run":
            shutil.rmtree(sdir, ignore_errors=True)  # no stale checkpoint or final/ stays
            write_marker(record_path, {"done": False, "key": key, "inputs": inputs})
        return plan, record

    plan, record = dist.on_main(prepare)
    if plan.action == "reuse" and record is not None:
        return record["summary"], record["output_id"]
    try:
        summary = run_sft(sft, resume=plan.action == "resume", progress=run.progress)
    except Stopped as err:  # SIGTERM: the student's checkpoint is saved; distill resumes it
        hint = f"{err} (or `r1kit distill --resume {run.out}`)"
        raise Stopped(hint, err.exit_code - 128) from None  # 130 after Ctrl-C, 143 SIGTERM
    output_id = new_output_id(key)
    if run.main:
        record = {"done": True, "key": key, "inputs": inputs, "output_id": output_id}
        write_marker(record_path, {**record, "summary": summary})
    return summary, output_id


def evaluate_student(
    cfg: DistillConfig,
    template: str,
    before: str | None,
    before_id: Any,
    after: str,
    after_id: str,
    run: Run,
) -> dict[str, Any]:
    """Held-out metrics of the starting student and the trained one (base_X, final_X), each
    reused from OUT/student-eval.json when the key of (that model, the eval settings) is
    unchanged: a changed --eval-problems re-evaluates without training again."""
    if not cfg.eval.problems:
        return {}
    settings = {
        "dataset": identity(cfg.dataset),
        "problems": cfg.eval.problems,
        "k": cfg.eval.k,
        "temperature": cfg.eval.temperature,
        "top_p": cfg.eval.top_p,
        "max_tokens": cfg.sampling.max_tokens,
        "template": template,
        "engine": cfg.run.engine,
    }
    path = run.out / "student-eval.json"
    cache = dist.on_main(lambda: read_marker(path) or {})
    problems: list[dict] | None = None
    res: dict[str, Any] = {}
    for name, model, ident in (("base", before, before_id), ("final", after, after_id)):
        key = key_of({"model": ident, "eval": settings})
        hit = cache.get(name)
        if isinstance(hit, dict) and hit.get("key") == key and isinstance(hit.get("eval"), dict):
            run.console.print(f"student {name} evaluation: reused (key {key[:8]})")
        else:
            problems = problems or heldout(cfg.dataset, cfg.eval.problems)
            what = "starting" if name == "base" else "fine-tuned"
            run.console.print(f"evaluating the {what} student on {len(problems)} problems")
            ev = _evaluate(model, problems, template, cfg)
            hit = cache[name] = {"key": key, "eval": ev}
            if run.main:
                write_marker(path, cache)
        res.update({f"{name}_{m}": hit["eval"][m] for m in EVALUATED if m in hit["eval"]})
    return res


def _evaluate(path: str | None, problems: list[dict], template: str, cfg: DistillConfig) -> dict:
    """Held-out metrics of the model at `path`, as r1kit sft evaluates (problems too long for
    its context with --max-tokens dropped, counted)."""
    model = load_model(path, device=device_of(cfg.run.device))
    tok = load_tokenizer(path)
    fit = PromptFit(tok, template, model_context(model), cfg.sampling.max_tokens)
    problems = fit.keep(problems, "held-out problems")
    summary, _ = evaluate_model(
        model,
        tok,
        problems,
        template,
        cfg.eval.k,
        cfg.sampling.max_tokens,
        engine=cfg.run.engine,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
    )
    return summary


def _student_init(cfg: DistillConfig, out: Path, console: Console) -> tuple[dict, str]:
    """OUT/student-init, the truncated student, made again only when (student, layers) changed
    (OUT/student-init.json records their key); returns its sizes and its key."""
    inputs = {"student": identity(cfg.student), "layers": cfg.student_layers}
    key = key_of(inputs)
    path, record_path = out / "student-init", out / "student-init.json"
    record = read_marker(record_path)
    plan = decide(record, key, inputs, (path / "config.json").exists(), False, path.exists())
    if plan.action == "reuse" and record is not None:
        console.print(f"student-init: reused: {plan.why}")
        return record["sizes"], key
    console.print(f"student-init: {plan.why}: truncating {cfg.student or 'the embedded model'}")
    record_path.unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    sizes = shrink(cfg.student, cfg.student_layers, path)
    write_marker(record_path, {"done": True, "key": key, "inputs": inputs, "sizes": sizes})
    return sizes, key


def _traces_and_student(
    cfg: DistillConfig, progress: bool
) -> tuple[dict[str, Any], str | None, Any]:
    """Teacher answers -> verified traces.jsonl (+ the truncated student); returns the summary so
    far, the student to fine-tune and the student's identity for the SFT's key."""
    console = Console(quiet=not progress, soft_wrap=True)
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
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    files.write_text(out / "traces.jsonl", text)  # atomic: the old traces or the new ones
    summary: dict[str, Any] = {
        "teacher": cfg.url or cfg.teacher or "embedded",
        "prompts": len(problems),
        **stats,
        "usage": usage,
        "teacher_s": round(t_teacher, 1),
        "traces_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    if not rows and cfg.optim.epochs:
        raise R1kitError(f"no teacher answer passed verification and the filters; see {out}")
    student: str | None = cfg.student
    student_id: Any = identity(cfg.student)
    if cfg.student_layers and cfg.optim.epochs:
        summary["student_init"], init_key = _student_init(cfg, out, console)
        student = str(out / "student-init")
        student_id = {"init": init_key}
    return summary, student, student_id


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
