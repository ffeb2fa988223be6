"""`r1kit pipeline RECIPE.yaml`: the DeepSeek-R1 recipe as one job. Each stage reads the
previous stage's output and writes OUT/NN-NAME/. A stage is reused only when the key of its
inputs (its resolved config, the previous stage's output, the base model and data files by
content; pipeline/cache.py) is the one its stage.json records; an edited recipe re-runs from the
first changed stage on, and the log says for every stage why it is reused, resumed or re-run.
An interrupted stage with an unchanged key resumes from its checkpoint. `--only NAME` re-runs
one stage (the stages before it must be up to date). After every model-producing stage the model
is evaluated on the same held-out problems (same seed), and the table of all stages so far is
printed.

OUT/heldout.jsonl   the held-out problems every stage is evaluated on
OUT/base_eval.json  the base model's evaluation, keyed by the model and the eval settings
OUT/NN-NAME/        the stage's job output (final/ for a model, sft.jsonl for samples, ...)
OUT/NN-NAME/stage.json  written when the stage is complete: {"done", "key", "inputs",
                    "output_id", "eval", "wall_s", ...}
OUT/attempts/NN-NAME.json  the key of a stage while it runs (an interrupted stage resumes under
                    it); removed when the stage is complete. Kept outside the stage's run
                    directory, which its job owns (train/run.py refuses foreign files there)
OUT/data/NN-NAME.train.jsonl  an all-scenario RL stage's prompts (general_share > 0)
OUT/summary.json    every stage's eval and wall time
OUT/report.md, OUT/report.png   the per-stage table and chart
OUT/run.lock        held for the pipeline's life: a second pipeline on OUT is refused

OUT is taken as every job takes its run directory (train/run.py's Run, as a re-run that continues:
the stages are cache-keyed): new, empty or a pipeline's OUT; another job's run is refused naming
that job, a directory of other files is refused.

Every state file is written atomically (train/files.py); a 0-byte or garbled stage.json means
"stage not done" with one warning line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

from r1kit.config import SampleConfig, SFTConfig, ZeroConfig
from r1kit.data.datasets import heldout, train_stream
from r1kit.errors import R1kitError, Stopped
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
from r1kit.pipeline.recipe import Recipe, Stage, load_recipe
from r1kit.pipeline.report import print_table, write_report
from r1kit.pipeline.sample import print_stats, run_sample
from r1kit.rewards.reward_model import train_reward_model
from r1kit.rl.zero import run_zero
from r1kit.sampling.heldout import evaluate_path
from r1kit.sft.train import run_sft
from r1kit.train import files
from r1kit.train.checkpoint import latest_checkpoint
from r1kit.train.run import Run

MODEL_KINDS = ("sft", "rl")
TRAINED_KINDS = ("sft", "rl")  # jobs on the run skeleton: they checkpoint and can resume
GENERAL_REWARDS = ["reward_model", "format", "language"]  # prompts without a checkable answer
REASONING_REWARDS = ["accuracy", "format", "language"]


def stage_dir(rec: Recipe, i: int, st: Stage) -> Path:
    return Path(rec.out) / f"{i + 1:02d}-{st.name}"


def _eval_kw(rec: Recipe) -> dict[str, Any]:
    ev = rec.eval
    # every model is evaluated in its own format: the base in R1-Zero's, the stages in the recipe's
    max_tokens = ev.get("max_tokens", ev.get("max_new_tokens", 128))  # the old name still works
    return {
        "template": "auto",
        "k": ev.get("k", 4),
        "max_new_tokens": max_tokens,
        "seed": ev.get("seed", 1),
    }


def _ref(rec: Recipe, dirs: dict[str, Path], ref: str | None, default: str | None) -> str | None:
    """'base' -> the recipe's model; '@NAME' or NAME of a stage -> its output; else as given."""
    if ref is None:
        return default
    if ref == "base":
        return rec.model
    name = ref[1:] if ref.startswith("@") else ref
    return str(dirs[name]) if name in dirs else ref


def _general_data(path: Path, dataset: str, share: float, n: int, seed: int) -> str:
    """RL prompts for all scenarios: a `share` of them carry no checkable answer and are scored
    by the reward model; each row's "rewards" says which rewards apply to it."""
    rng = random.Random(seed)
    lines = []
    for ex in itertools.islice(train_stream(dataset, seed + 7), n):
        if rng.random() < share:
            row = {
                "question": ex["question"],
                "answer": "",
                "rewards": GENERAL_REWARDS,
                **({"language": ex["language"]} if "language" in ex else {}),
            }
        else:
            row = {**ex, "rewards": REASONING_REWARDS}
        lines.append(json.dumps(row) + "\n")
    files.write_text(path, "".join(lines))
    return str(path)


def _sub_reward_paths(spec: str, dirs: dict[str, Path]) -> str:
    return re.sub(
        r"reward_model@([\w.-]+)",
        lambda m: f"reward_model@{dirs.get(m.group(1), m.group(1))}",
        spec,
    )


def _last(dirs: dict[str, Path], rec: Recipe, kind: str) -> str | None:
    names = [s.name for s in rec.stages if s.kind == kind and s.name in dirs]
    return str(dirs[names[-1]]) if names else None


def stage_config(
    rec: Recipe, i: int, st: Stage, dirs: dict[str, Path], model: str | None, heldout_file: str
) -> Any:
    """The stage's job config, resolved (the recipe entry over the job's defaults, references to
    earlier stages replaced by their outputs); nothing is written. A reward_model stage's is a
    dict of train_reward_model's arguments."""
    out = stage_dir(rec, i, st)
    kw = dict(st.fields)
    if st.kind == "sft":
        data = kw.pop("data", None)
        refs = st.data if isinstance(st.data, list) else [st.data] if st.data else []
        if refs:  # each source: a stage's output (its sft.jsonl) or as given; joined by ','
            paths = [_ref(rec, dirs, r, None) for r in refs]
            data = ",".join(str(Path(p) / "sft.jsonl") if Path(p).is_dir() else p for p in paths)
        return SFTConfig.of(
            **{
                **kw,
                "model": model,
                "out": str(out),
                "eval_problems": 0,
                "template": rec.template,
                **({"data": data} if data else {}),
            }
        )
    if st.kind == "rl":
        kw.pop("general_share", None)
        ev = rec.eval
        cfg = ZeroConfig.of(
            **{
                "eval_problems": ev.get("problems", 100),
                "eval_k": ev.get("k", 4),
                **kw,
                "model": model,
                "out": str(out),
                "template": rec.template,
                "eval_data": heldout_file,
            }
        )
        cfg.rewards = _sub_reward_paths(cfg.rewards, dirs)
        return cfg
    if st.kind == "sample":
        return SampleConfig.of(**{**kw, "model": model, "out": str(out), "template": rec.template})
    # reward_model: kept samples are the positives, rejected ones the negatives
    src = _ref(rec, dirs, st.data, None) or _last(dirs, rec, "sample") or ""
    return {
        "base": _ref(rec, dirs, st.model, rec.model),
        "src": src,
        "template": rec.template,
        **kw,
    }


def stage_inputs(
    rec: Recipe, st: Stage, cfg: Any, after: str | None, heldout_id: str
) -> dict[str, Any]:
    """Everything that decides a stage's result, as hashed into its key: its resolved config
    (flat field names; local files by content, this pipeline's own outputs by their place, which
    `after` covers), the output id of the stage before it, and for RL (which evaluates itself)
    the held-out problems."""
    flat = dict(cfg) if isinstance(cfg, dict) else result_fields(cfg.to_flat())
    if st.kind == "rl":
        flat["general_share"] = st.fields.get("general_share", 0.0)
    inputs = {
        "name": st.name,
        "kind": st.kind,
        "config": identity(flat, Path(rec.out)),
        "after": after,
    }
    if st.kind == "rl":
        inputs["heldout"] = heldout_id
    return inputs


def run_stage(rec: Recipe, st: Stage, cfg: Any, out: Path, resume: bool, progress: bool) -> dict:
    """Run one stage's job into `out` (resuming its checkpoint when `resume`); returns its job
    summary."""
    if st.kind == "sft":
        return run_sft(cfg, resume=resume, progress=progress)
    if st.kind == "rl":
        share = st.fields.get("general_share", 0.0)
        if share > 0:
            n = cfg.run.steps * cfg.algo.prompts_per_step * (1 + cfg.algo.max_refills)
            data = Path(rec.out) / "data" / f"{out.name}.train.jsonl"
            data.parent.mkdir(parents=True, exist_ok=True)
            cfg.dataset = _general_data(data, cfg.dataset, share, n, cfg.run.seed)
        return run_zero(cfg, resume=resume, progress=progress)
    if st.kind == "sample":
        stats = run_sample(cfg, progress=progress)
        if progress:
            print_stats(stats, str(out))
        return stats
    kw = dict(cfg)
    src = Path(kw.pop("src"))
    base, template = kw.pop("base"), kw.pop("template")
    if not (src / "sft.jsonl").exists():
        raise R1kitError(f"stage {st.name}: no samples in {src} (set data: to a sample stage)")
    pos = [json.loads(x) for x in (src / "sft.jsonl").read_text().splitlines()]
    neg = [json.loads(x) for x in (src / "rejected.jsonl").read_text().splitlines()]
    cap = kw.pop("max_rows", 2000) // 2
    rng = random.Random(kw.get("seed", 0))
    rows = [{**r, "label": 1} for r in rng.sample(pos, min(cap, len(pos)))] + [
        {**r, "label": 0} for r in rng.sample(neg, min(cap, len(neg)))
    ]
    return train_reward_model(base, rows, out, template=template, **kw)


def attempt_path(rec: Recipe, i: int, st: Stage) -> Path:
    return Path(rec.out) / "attempts" / f"{i + 1:02d}-{st.name}.json"


def _output_ok(st: Stage, sdir: Path) -> bool:
    """The stage's product is on disk (a user may have deleted it); a model complete."""
    if st.kind in MODEL_KINDS:
        return final_problem(sdir) is None
    if st.kind == "sample":
        return (sdir / "sft.jsonl").is_file()
    return sdir.is_dir()


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)


def _base_eval(rec: Recipe, out: Path, problems: list[dict], heldout_id: str) -> dict:
    """The base model's evaluation, cached in base_eval.json under the key of the model (by
    content when local), the eval settings and the held-out problems."""
    path = out / "base_eval.json"
    key = key_of({"model": identity(rec.model), "eval": _eval_kw(rec), "heldout": heldout_id})
    saved = read_marker(path)
    if saved and saved.get("key") == key and isinstance(saved.get("eval"), dict):
        return saved["eval"]
    res = evaluate_path(rec.model, problems, **_eval_kw(rec))
    files.write_json(path, {"key": key, "eval": res})
    return res


def _plan_line(i: int, n: int, plan: Plan, only: str | None) -> str:
    """What this invocation does from stage i (0-based) of n on: 'rerunning stages 2-4'."""
    if only is not None:
        return f"rerunning stage {i + 1} alone"
    rest = f"stages {i + 2}-{n}" if i + 2 < n else f"stage {n}"
    if plan.action == "resume":
        return "resuming it from its checkpoint" + (f"; {rest} after it" if i + 1 < n else "")
    return f"rerunning stages {i + 1}-{n}" if i + 1 < n else f"rerunning stage {n}"


def _label(i: int, st: Stage) -> str:
    return f"stage {i + 1} ({st.name}, {st.kind})"


def run_pipeline(
    path: str, only: str | None = None, progress: bool = True, out: str | None = None
) -> dict[str, Any]:
    """Run the recipe at `path`: every stage whose key changed or that is not complete (or
    `only` that one); `out` overrides the recipe's output directory."""
    rec = load_recipe(path)
    if out is not None:
        rec.out = out
    if only and only not in {s.name for s in rec.stages}:
        raise R1kitError(
            f"no stage {only!r} in {path}; stages: {', '.join(s.name for s in rec.stages)}"
        )
    # OUT by the rules of every job's run directory, before any model loads: a read-only path,
    # a live run (a second pipeline), another job's run or other files are refused in one line
    # and left as they were; a re-run continues (resume, cache-keyed); a failed start leaves no
    # directory; a full disk is one line. Each stage's job holds its own NN-NAME/ the same way.
    with Run(rec.out, "pipeline", resume=True, progress=progress, checkpoints=False):
        return _pipeline(rec, path, only, progress)


def _pipeline(rec: Recipe, path: str, only: str | None, progress: bool) -> dict[str, Any]:
    """run_pipeline with OUT held."""
    out = Path(rec.out)
    ev = rec.eval
    problems = heldout(ev.get("dataset", "mix"), ev.get("problems", 100))
    if not problems:
        raise R1kitError(f"no held-out problems for eval dataset {ev.get('dataset')!r}")
    heldout_file = out / "heldout.jsonl"
    heldout_text = "".join(json.dumps(p) + "\n" for p in problems)
    heldout_id = hashlib.sha256(heldout_text.encode()).hexdigest()[:16]
    old = heldout_file.read_text() if heldout_file.is_file() else None
    if old != heldout_text:
        files.write_text(heldout_file, heldout_text)
    eval_key = key_of({"eval": _eval_kw(rec), "heldout": heldout_id})
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    rows.append(
        {
            "stage": "base",
            "kind": "-",
            "eval": _base_eval(rec, out, problems, heldout_id),
            "wall_s": 0.0,
        }
    )
    if progress:
        print_table(rows)
    dirs: dict[str, Path] = {}
    model = rec.model
    after: str | None = None  # the previous stage's output id
    rerun_from: int | None = None  # the first stage this invocation runs
    n = len(rec.stages)
    for i, st in enumerate(rec.stages):
        sdir = stage_dir(rec, i, st)
        marker_path = sdir / "stage.json"
        st_model = _ref(rec, dirs, st.model, model)
        cfg = stage_config(rec, i, st, dirs, st_model, str(heldout_file))
        inputs = stage_inputs(rec, st, cfg, after, heldout_id)
        key = key_of(inputs)
        marker = read_marker(marker_path)
        if not (marker and marker.get("done")):  # not complete: the attempt's key, if any
            marker = read_marker(attempt_path(rec, i, st))
        can_resume = st.kind in TRAINED_KINDS and latest_checkpoint(sdir) is not None
        plan = decide(marker, key, inputs, _output_ok(st, sdir), can_resume, sdir.exists())
        lost = final_problem(sdir) if st.kind in MODEL_KINDS else None
        if lost and marker and marker.get("done") and marker.get("key") == key:
            # complete once, its model lost since (deleted, a torn copy): its checkpoint at the
            # last step writes final/ again; the next stage could not load it otherwise
            plan = Plan("resume" if can_resume else "run", lost)
        if plan.action == "resume" and not resumable(sdir):  # sha256-checked only now
            why = lost or "interrupted"
            plan = Plan("run", f"{why}, and none of its checkpoints is intact")
        if rerun_from is not None and plan.action != "resume":
            j = rerun_from
            plan = Plan("run", f"stage {j + 1} ({rec.stages[j].name}) before it was re-run")
        if only is not None:
            if st.name == only:
                plan = Plan("run", "--only")
            elif rerun_from is not None:
                later = f"stages {i + 1}-{n} are" if i + 1 < n else f"stage {n} is"
                _say(
                    progress,
                    f"{later} now out of date (stage {rerun_from + 1} was re-run): the "
                    "pipeline without --only reruns them",
                )
                break
            elif plan.action != "reuse":
                raise R1kitError(
                    f"{_label(i, st)} before {only} is not up to date ({plan.why}); run the "
                    "pipeline without --only first"
                )
        if plan.action == "reuse":
            info = marker or {}
            _say(progress, f"{_label(i, st)}: reused: {plan.why}")
            if st.kind in MODEL_KINDS and info.get("eval_key") != eval_key:
                _say(progress, f"{_label(i, st)}: re-evaluating (the eval settings changed)")
                info["eval"] = evaluate_path(str(sdir / "final"), problems, **_eval_kw(rec))
                info["eval_key"] = eval_key
                write_marker(marker_path, info)
        else:
            if rerun_from is None:
                rerun_from = i
                _say(progress, f"{_label(i, st)}: {plan.why}: {_plan_line(i, n, plan, only)}")
            else:
                _say(progress, f"{_label(i, st)}: {plan.action}: {plan.why}")
            info = _run_one(rec, i, st, cfg, inputs, key, plan, st_model, progress)
            if st.kind in MODEL_KINDS:
                info["eval"] = evaluate_path(str(sdir / "final"), problems, **_eval_kw(rec))
                info["eval_key"] = eval_key
            write_marker(marker_path, info)
            attempt = attempt_path(rec, i, st)
            attempt.unlink(missing_ok=True)  # complete: stage.json says so
            if not any(attempt.parent.iterdir()):
                attempt.parent.rmdir()
        after = info.get("output_id")
        dirs[st.name] = sdir
        if st.kind in MODEL_KINDS:
            model = str(sdir / "final")
        rows.append(
            {
                "stage": st.name,
                "kind": st.kind,
                "eval": info.get("eval"),
                "job": info.get("job"),
                "wall_s": info.get("wall_s", 0.0),
            }
        )
        if progress:
            print_table(rows)
    summary = {
        "recipe": str(path),
        "out": str(out),
        "final_model": model,
        "stages": rows,
        "wall_s_this_run": round(time.time() - t0, 1),
        "wall_s_stages": round(sum(r["wall_s"] for r in rows), 1),
    }
    files.write_json(out / "summary.json", summary)
    write_report(rows, out)
    return summary


def _run_one(
    rec: Recipe,
    i: int,
    st: Stage,
    cfg: Any,
    inputs: dict[str, Any],
    key: str,
    plan: Plan,
    st_model: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Run (or resume) one stage; returns its finished stage record (without the eval)."""
    sdir = stage_dir(rec, i, st)
    resume = plan.action == "resume"
    if not resume and sdir.exists():
        # a re-run replaces the old output whole (no stale checkpoint or final/ stays), and its
        # job then starts in an empty directory, as train/run.py's Run asks
        shutil.rmtree(sdir)
    _say(
        progress,
        f"\nstage {i + 1}/{len(rec.stages)} {st.name} ({st.kind}) from "
        f"{st_model or 'the embedded model'}",
    )
    # the attempt's key first: an interruption from here on resumes under the same key
    write_marker(attempt_path(rec, i, st), {"done": False, "key": key, "inputs": inputs})
    ts = time.time()
    try:
        job = run_stage(rec, st, cfg, sdir, resume, progress)
    except Stopped as err:  # SIGTERM: the stage saved its checkpoint; a re-run resumes it
        hint = f"{err} (or run `r1kit pipeline {rec.path}` again: it resumes)"
        raise Stopped(hint, err.exit_code - 128) from None  # 130 after Ctrl-C, 143 SIGTERM
    return {
        "done": True,
        "name": st.name,
        "kind": st.kind,
        "key": key,
        "output_id": new_output_id(key),
        "inputs": inputs,
        "model_in": st_model,
        "job": job,
        "wall_s": round(time.time() - ts, 1),
    }
