"""Bad model ids and misnamed data fields are one-line errors: an unknown or unreachable hub id
(the hub probed once, no minute of retries; offline or not, a model that cannot be had says so),
and a --question-field / --answer-field / --solution-field the data does not have names the
fields it does have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.modeling import load_model, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MISSING = "some-org/nonexistent-model"


def _data(tmp_path: Path) -> str:
    path = tmp_path / "q.jsonl"
    rows = [{"question": "1 + 1?", "answer": "2", "solution": "1 + 1 = \\boxed{2}"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_of_a_missing_hub_model_is_one_line(tmp_path):
    """As a user runs it: the hub not switched off (this machine cannot reach it: the probe's
    connection error; with a network: the hub's 'not found'), in a fresh process."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: nothing to fall back on
    p = subprocess.run(
        [sys.executable, "-m", "r1kit.cli", "eval", MISSING, "--data", _data(tmp_path)],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = p.stderr.strip()
    assert p.returncode == 2, p.stderr[-2000:]
    assert err.count("\n") == 0 and err.startswith("r1kit: error:") and repr(MISSING) in err
    assert "Retrying" not in p.stderr


@pytest.mark.parametrize("load", [load_tokenizer, load_model])
def test_offline_hub_id_not_cached_is_one_line(load):
    # the suite runs with HF_HUB_OFFLINE=1 (conftest): the cache is all there is
    with pytest.raises(R1kitError, match="not in the local Hugging Face cache") as err:
        load(MISSING)
    assert "\n" not in str(err.value) and MISSING in str(err.value)


@pytest.mark.parametrize(
    "flag, name",
    [("--answer-field", "answr"), ("--question-field", "qestion"), ("--solution-field", "sol")],
)
def test_misspelled_field_names_the_fields_the_file_has(tmp_path, capsys, flag, name):
    data = _data(tmp_path)
    assert main(["eval", "--data", data, flag, name, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{flag} '{name}': no such field in {data}" in err
    assert "(its fields: question, answer, solution)" in err


def test_a_checkpoint_pruned_while_it_loads_is_named_not_blamed_on_the_hub(tmp_path, monkeypatch):
    """`r1kit eval RUN` on a live run: the newest checkpoint is chosen, then the run's
    --keep-last deletes it while its weights load. The error says so, not 'cannot load from the
    hub'. The deletion is injected at the loader's call, the moment the race happens."""
    import shutil

    from transformers import AutoModelForCausalLM

    from r1kit.modeling import EMBEDDED_DIR

    ckpt = tmp_path / "step-000003"
    shutil.copytree(EMBEDDED_DIR, ckpt)
    load = AutoModelForCausalLM.from_pretrained

    def pruned_meanwhile(name, *args, **kw):
        shutil.rmtree(ckpt)  # the training process prunes it now
        return load(name, *args, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", pruned_meanwhile)
    with pytest.raises(R1kitError, match=r"step-000003 was removed while it loaded .*run again"):
        load_model(str(ckpt))
