"""Asynchronous one-step-off-policy GRPO (rl/async_loop.py) on CPU with gloo: 1 trainer rank and
1 generator rank run `r1kit zero --async-depth 1` on the embedded tiny model
(tests/async_worker.py observes what the trainer is handed). Each rollout carries the policy
version that sampled it (lag 1 after the first step); the importance weights the loss used are
the exact ratio exp(trainer logp - engine logp) truncated at the cap, computed here
independently with plain transformers forwards, and the engine's log-probs are the previous
version's (the lag is real); a SIGTERM that reached the generator alone stops both ranks after
the same step with a checkpoint, and the resumed run continues at the next step, on the next
prompts of the training stream, from the checkpoint's weights on the generator too. On 4 ranks split 2:2 the trainers shard
among themselves and the generators split the prompts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from launch import torchrun
from numerics import decoder_terms, diff_tol, tol

from r1kit.cli import main as cli
from r1kit.data.datasets import train_stream
from r1kit.modeling import load_model
from r1kit.rl.report import report_title

pytestmark = pytest.mark.usefixtures("one_thread")
WORKER = Path(__file__).with_name("async_worker.py")
G, PROMPTS, NEW = 4, 3, 16
CFG = dict(
    dataset="arith",
    steps=3,
    prompts_per_step=PROMPTS,
    group_size=G,
    eval_problems=2,
    eval_k=1,
    max_tokens=NEW,
    save_every=1,
    keep_last=0,
    lr=1e-3,
    device="cpu",
    async_depth=1,
)
CAP = 2.0  # --tis-cap under --async-depth 1 when none is given (async_loop.ASYNC_TIS_CAP)


def _launch(tmp: Path, name: str, job: dict) -> list[dict]:
    job_path, res = tmp / f"{name}-job.pt", tmp / f"{name}-res"
    torch.save(job, job_path)
    torchrun(2, WORKER, job_path, res)
    return [torch.load(f"{res}.rank-{r}.pt", weights_only=False) for r in (0, 1)]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _logprobs(model, r: dict) -> tuple[torch.Tensor, float, int]:
    """The completion's log-probs [C] under `model` (temperature 1), one unpadded row, with the
    largest |logit| and the sequence length (for the rounding bound)."""
    ids = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
    P, C = len(r["prompt_ids"]), len(r["completion_ids"])
    with torch.no_grad():
        logits = model(ids).logits[0, P - 1 : P + C - 1].float()  # [C, V]: predicts the completion
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(r["completion_ids"])[:, None])
    return logp[:, 0], float(logits.abs().max()), P + C


def _model(weights: dict):
    model = load_model(None, dtype=torch.float32, device="cpu").eval()
    model.load_state_dict(weights)
    return model


def test_async_versions_exact_importance_weights_sigterm_and_resume(tmp_path):
    out = tmp_path / "run"
    ranks = _launch(
        tmp_path, "first", {"cfg": dict(CFG, out=str(out)), "resume": False, "sigterm_at": 3}
    )
    # the generator signalled itself after sampling batch 3 (during update 2): both ranks stopped
    # after step 2, as a SIGTERM, with step 2's checkpoint written by the trainer
    for res in ranks:
        line, code = res["stopped"]
        assert code == 143 and "stopped by SIGTERM after step 2" in line, line
    assert ranks[0]["stopped"] == ranks[1]["stopped"]  # one line, whichever rank prints it
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert json.loads((out / "config.json").read_text())["algo"]["tis_cap"] == CAP
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["lag"] for r in rows] == [0, 1]  # batch 2 was sampled by v0, trained on by v1
    assert "async" in report_title(rows) and "async" not in report_title(rows[:1])
    assert [r["policy_version"] for r in rows] == [0, 0]
    assert [r["data_pos"] for r in rows] == [PROMPTS, 2 * PROMPTS]
    params = sum(p.numel() * p.element_size() for p in load_model(None).parameters())
    assert all(r["bcast_gb"] == round(params / 1e9, 4) and r["bcast_s"] >= 0 for r in rows)

    steps = ranks[0]["records"]  # the trainer's view of its two updates
    assert [s["version"] for s in steps] == [0, 1]
    assert [{r["policy_version"] for r in s["rollouts"]} for s in steps] == [{0}, {0}]
    cfg = load_model(None).config
    for s, row in zip(steps, rows):
        model = _model(s["weights"])  # the trainer's weights when it trained on this batch
        sampler = _model(steps[0]["weights"])  # v0: the weights that sampled both batches
        w_sum = clipped = n_tok = err = 0.0
        for rows_j, isw in zip(s["micro"], s["isw"]):
            for i, k in enumerate(rows_j):
                r = s["rollouts"][k]
                logp, mag, length = _logprobs(model, r)
                engine = torch.tensor(r["logprobs"])
                # the trainer's and this forward's log-probs: one value in two summation orders;
                # the engine's log-probs went through float32 once more in the batch
                t = diff_tol(torch.float32, mag, decoder_terms(cfg, length))
                t = t + float(engine.abs().max()) * torch.finfo(torch.float32).eps
                exact = torch.exp(logp - engine).clamp(max=CAP)  # [C]
                P, C = len(r["prompt_ids"]), len(r["completion_ids"])
                used = isw[i, P - 1 : P + C - 1].double()
                bound = exact.double() * (torch.exp(torch.tensor(t)) - 1)
                assert ((used - exact.double()).abs() <= bound).all(), (s["version"], k)
                w_sum += float(exact.sum())
                err += float(bound.sum())
                clipped += float((torch.exp(logp - engine) >= CAP).sum())
                n_tok += C
                # the engine's log-probs are v0's: the sampling version, not the trainer's
                at_v0, mag0, _ = _logprobs(sampler, r)
                t0 = diff_tol(torch.float32, mag0, decoder_terms(cfg, length)) + t
                assert float((at_v0 - engine).abs().max()) <= t0
                if s["version"] == 1:
                    lagged = float((logp - engine).abs().max())
        # the reported summary of those weights: per loss token, over the whole batch
        # (the trainer sums its float32 weights over n_tok tokens on its side)
        err += tol(torch.float32, CAP * n_tok, int(n_tok))
        assert row["is_weight"] == pytest.approx(w_sum / n_tok, abs=err / n_tok)
        assert row["is_clip"] == pytest.approx(clipped / n_tok, abs=1.5 / n_tok)  # one tie
    assert lagged > 1e-3  # v1 differs from v0 where it matters: the correction is not 1

    # resumed: step 3 on the next prompts, sampled from the checkpoint's weights (v2) by the
    # generator (lag 0: the batch in flight at the stop was dropped and sampled again)
    ranks = _launch(tmp_path, "resume", {"cfg": dict(CFG, out=str(out)), "resume": True})
    assert ranks[0]["summary"]["steps"] == ranks[1]["summary"]["steps"] == 3
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (rows[2]["lag"], rows[2]["policy_version"], rows[2]["data_pos"]) == (0, 2, 9)
    (s3,) = ranks[0]["records"]
    assert s3["version"] == 2 and {r["policy_version"] for r in s3["rollouts"]} == {2}
    stream = train_stream("arith", 0)
    want = [next(stream)["question"] for _ in range(3 * PROMPTS)]
    got = [r["question"] for s in (*steps, s3) for r in s["rollouts"][::G]]
    assert got == want
    model = _model(s3["weights"])  # the generator sampled from the very same weights
    r = s3["rollouts"][0]
    logp, mag, length = _logprobs(model, r)
    engine = torch.tensor(r["logprobs"])
    t = diff_tol(torch.float32, mag, decoder_terms(cfg, length))
    t = t + float(engine.abs().max()) * torch.finfo(torch.float32).eps
    assert float((logp - engine).abs().max()) <= t


def test_one_process_falls_back_to_the_synchronous_loop(tmp_path, capsys):
    flags = ["--dataset", "arith", "--steps", "1", "--prompts-per-step", "2", "--group-size", "2"]
    flags += ["--eval-problems", "1", "--eval-k", "1", "--max-new-tokens", "8", "--quiet"]
    assert cli(["zero", "--out", str(tmp_path / "one"), "--async-depth", "1", *flags]) == 0
    err = capsys.readouterr().err
    assert "--async-depth 1 needs 2 or more ranks" in err and "synchronous loop" in err
    (row,) = _rows(tmp_path / "one")
    assert "lag" not in row and "gen_s" in row
    # --generator-ranks without --async-depth 1 does nothing, and says so
    assert cli(["zero", "--out", str(tmp_path / "two"), "--generator-ranks", "1", *flags]) == 0
    assert "--generator-ranks 1 without --async-depth 1: ignored" in capsys.readouterr().err


def test_two_trainers_two_generators(tmp_path):
    """4 gloo ranks, split 2:2: the trainers FSDP-shard the policy between themselves (their
    checkpoint holds two ranks' shards) and the generators split each batch's prompts. The first
    batch is sampled by the starting weights with the seeds one process draws, so it is the
    synchronous single-process run's first batch."""
    flags = ["--dataset", "arith", "--prompts-per-step", "3", "--group-size", str(G)]
    flags += ["--eval-problems", "2", "--eval-k", "1", "--max-new-tokens", str(NEW), "--quiet"]
    flags += ["--lr", "1e-3", "--device", "cpu"]
    out = tmp_path / "split"
    zero = ["-m", "r1kit.cli", "zero", "--out", out, "--steps", "2", "--async-depth", "1"]
    p = torchrun(4, *zero, *flags)
    assert "2 trainer rank(s), 2 generator rank(s)" in p.stderr
    rows = _rows(out)
    assert [(r["step"], r["lag"], r["data_pos"]) for r in rows] == [(1, 0, 3), (2, 1, 6)]
    shards = sorted(x.name for x in (out / "checkpoints" / "step-000002" / "dcp").glob("*.distcp"))
    assert len(shards) == 2  # written by the two trainer ranks
    assert cli(["zero", "--out", str(tmp_path / "sync"), "--steps", "1", *flags]) == 0
    (sync,) = _rows(tmp_path / "sync")
    for k in ("reward", "accuracy", "format", "response_len", "truncated"):
        assert rows[0][k] == sync[k], k


def _torchrun(n: int, args: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node n -m r1kit.cli ARGS` on gloo, run to its end (`ok`: exit 0)."""
    return torchrun(n, "-m", "r1kit.cli", *args, ok=ok)


def _adam_state(ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{parameter name: Adam's state} of a checkpoint: from its shards (dcp/), else from the
    one-process trainer state (keyed by position in the model's parameter order)."""
    if (ckpt / "dcp").is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(ckpt / "dcp", ckpt.parent / "full.pt")
        return torch.load(ckpt.parent / "full.pt", weights_only=False)["optim"]["state"]
    names = [n for n, _ in load_model(None).named_parameters()]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    return {names[i]: s for i, s in state.items()}


def test_one_process_checkpoint_resumes_on_sharded_trainers(tmp_path):
    """A checkpoint written by one trainer (a one-process run, or an async run with one trainer
    rank) resumed on two FSDP trainer ranks: Adam's moments (full tensors in the file) become
    each rank's shards. They used to go in whole, and the first optimizer step failed
    (`aten.lerp_ got mixed torch.Tensor and DTensor`)."""
    out = tmp_path / "run"
    flags = ["--dataset", "arith", "--prompts-per-step", "3", "--group-size", str(G)]
    flags += ["--eval-problems", "2", "--eval-k", "1", "--max-new-tokens", str(NEW), "--quiet"]
    flags += ["--lr", "1e-3", "--device", "cpu"]
    assert cli(["zero", "--out", str(out), "--steps", "1", "--async-depth", "1", *flags]) == 0
    before = _adam_state(out / "checkpoints" / "step-000001")
    p = _torchrun(3, ["zero", "--resume", str(out), "--steps", "2", "--quiet"])
    assert "2 trainer rank(s), 1 generator rank(s)" in p.stderr
    rows = _rows(out)
    got = [(r["step"], r.get("lag"), r.get("data_pos")) for r in rows]
    assert got == [(1, None, None), (2, 0, 6)]  # the first step synchronous, in one process
    after = _adam_state(out / "checkpoints" / "step-000002")
    assert after.keys() == before.keys()
    beta2 = 0.99  # rl/trainer.py's AdamW betas
    grew = 0
    for name, s in after.items():
        assert float(s["step"]) == 2, name  # the resumed step counted on from the file's 1
        # v2 = beta2 * v1 + (1 - beta2) * g^2 >= beta2 * v1, elementwise and exactly (the
        # added term is >= 0 and rounding is monotone): v1 went to the right shards
        v1 = before[name]["exp_avg_sq"].float()
        assert (s["exp_avg_sq"] >= v1 * beta2).all(), name
        grew += int((s["exp_avg_sq"] > v1 * beta2).sum())
    assert grew > 0  # the resumed step had gradients


def test_a_trainer_failure_stops_the_generators_with_its_line(tmp_path):
    """--lr 1e3 makes step 2's gradient norm nan on the trainer rank (--nan-policy stop): the
    generator rank stops with the trainer's one line and exit 2, instead of dying with a
    traceback on the connection the trainer closed (the CLI shows a line the ranks share once;
    torchrun lists each rank's exit code)."""
    out = tmp_path / "run"
    flags = ["--dataset", "arith", "--prompts-per-step", "2", "--group-size", str(G)]
    flags += ["--eval-problems", "1", "--eval-k", "1", "--max-new-tokens", str(NEW), "--quiet"]
    flags += ["--lr", "1e3", "--device", "cpu", "--steps", "3", "--save-every", "1"]
    flags += ["--async-depth", "1"]
    p = _torchrun(2, ["zero", "--out", str(out), *flags], ok=False)
    line = "r1kit: error: step 2: the gradient norm is nan"
    errors = {x for x in p.stderr.splitlines() if x.startswith("r1kit: ")}
    assert len(errors) == 1 and errors.pop().startswith(line), p.stderr[-3000:]
    assert p.stderr.count("exitcode  : 2 ") == 2, p.stderr[-3000:]  # the trainer and the generator
    assert p.stderr.count("Traceback") == 1, p.stderr[-3000:]  # torchrun's own ChildFailedError
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000001"
