"""Load and save model + tokenizer: the embedded default, a local directory, or a hub id."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from r1kit import manifest
from r1kit.chat import template_of
from r1kit.errors import R1kitError

EMBEDDED_DIR = Path(__file__).parent / "assets" / "tiny"
EMBEDDED_NAMES = ("tiny", "r1kit-tiny", "embedded")


def device_of(name: str) -> str:
    """The device a job runs on: `auto` is the GPU when there is one, else the CPU."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def resolve_model(spec: str | None) -> str:
    """Map a user's model argument to something `from_pretrained` takes, or explain why not."""
    if spec is None or spec in EMBEDDED_NAMES:
        if not (EMBEDDED_DIR / "config.json").exists():
            raise R1kitError(
                f"the embedded model is missing from {EMBEDDED_DIR}; rebuild it with "
                "`r1kit pretrain --preset tiny`"
            )
        return str(EMBEDDED_DIR)
    path = Path(spec).expanduser()
    if path.exists():
        # a run directory from `r1kit zero` (its config.json is the job's, not a model's)
        chosen = run_model(path)
        if chosen is not None:
            return chosen
        if not (path / "config.json").exists():
            raise R1kitError(f"{spec} is not a model directory (no config.json in it)")
        return str(path)
    looks_like_path = (
        spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]
    )
    if looks_like_path or spec.count("/") != 1:
        raise R1kitError(f"model path does not exist: {spec}")
    return spec  # a hub id such as Qwen/Qwen2.5-0.5B


def run_model(run: Path) -> str | None:
    """The model of run directory `run`: its final/ when complete (manifest present and every
    size matching: a write that finished; sizes only, as final/ is not resumed from and the
    loader reads the weights next), else its newest intact checkpoint (sha256-verified) with a
    one-line note; an R1kitError when it has neither; None when `run` is no run directory."""
    final = run / "final"
    problem = manifest.check(final, full=False) if final.is_dir() else None
    if problem == f"no {manifest.MANIFEST}":  # final/ from before manifests: its files there?
        problem = manifest.legacy_problem(final, manifest.MODEL_NEEDS)
    if final.is_dir() and problem is None:
        return str(final)
    skipped = [f"{final} is incomplete ({problem})"] if final.is_dir() else []
    choice = manifest.choose_checkpoint(run, full=True, needs=manifest.MODEL_NEEDS)
    skipped += choice.skipped
    if choice.path is not None and (choice.path / "config.json").exists():
        # no final/ yet (a run stopped or still training) or a broken one: say which model
        why = "; ".join(skipped) if skipped else f"{run} has no final/ (not finished)"
        note(f"{why}; using checkpoint {choice.path}")
        return str(choice.path)
    if skipped:
        raise R1kitError(f"{run} holds no complete model: {'; '.join(skipped)}")
    return None


@functools.cache
def note(message: str) -> None:
    """One line on stderr, once per process (the model is resolved more than once a job)."""
    print(f"r1kit: warning: {message}", file=sys.stderr, flush=True)


HUB_PROBE_TIMEOUT_S = 3.0  # one request, no retries: an unreachable hub is one line within 5 s


@functools.cache
def hub_check(name: str, repo_type: str = "model") -> None:
    """Before `from_pretrained` (or `datasets.load_dataset`) of hub id `name`: one quick request
    to the hub instead of a minute of retries. A missing or gated repo is one line now. An
    unreachable hub turns the process offline (HF_HUB_OFFLINE), so a cached copy loads from the
    cache at once; a model that is not cached is one line naming what to do (a dataset's loader
    then fails at once with its own message)."""
    from huggingface_hub import constants, repo_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    what = "model" if repo_type == "model" else "dataset"
    cached = repo_type != "model" or isinstance(try_to_load_from_cache(name, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise R1kitError(
                f"{name!r} is not in the local Hugging Face cache and the hub is offline "
                "(HF_HUB_OFFLINE): download it elsewhere and pass its local directory instead"
            )
        return
    try:
        repo_info(name, repo_type=repo_type, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise R1kitError(
            f"{name!r} is gated on the Hugging Face hub: accept its terms on its page and log "
            "in (`hf auth login`), or pass a local copy"
        ) from None
    except RepositoryNotFoundError:
        raise R1kitError(
            f"no {what} {name!r} on the Hugging Face hub (if it is private, log in with "
            "`hf auth login`)"
        ) from None
    except HfHubHTTPError:
        return  # the hub answered: the loader says what it has to say
    except Exception as err:  # DNS, refused, timeout, proxy: the hub is unreachable
        if cached:
            _go_offline()
            return
        raise R1kitError(
            f"cannot reach the Hugging Face hub for {name!r} ({type(err).__name__}: offline?) "
            "and it is not in the local cache: download it elsewhere and pass its local directory"
        ) from None


def _go_offline() -> None:
    """HF_HUB_OFFLINE for the rest of the process, as the loaders read it (after import)."""
    import sys

    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"  # for what imports later (datasets reads it then)
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def hub_error(spec: str, err: Exception, local: bool = False) -> R1kitError:
    """The one-line error for a model `from_pretrained` could not load from `spec`; `local`:
    `spec` was a directory here when loading began."""
    if local and not Path(spec).exists():  # not the hub's fault: the directory went away
        return R1kitError(
            f"{spec} was removed while it loaded (a live run's --keep-last prunes its older "
            "checkpoints): run again to load the run's newest one"
        )
    if Path(spec).exists():
        return R1kitError(f"cannot load the model in {spec}: {str(err).splitlines()[0]}")
    return R1kitError(
        f"cannot load {spec!r} from the Hugging Face hub ({type(err).__name__}); if this machine "
        "is offline, download the model elsewhere and pass its local directory instead"
    )


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_tokenizer(spec: str | None) -> Any:
    name = resolve_model(spec)
    local = Path(name).exists()
    if not local:
        hub_check(name)  # before the heavy import: a bad id fails at once
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise hub_error(name, err, local) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str | None, dtype: Any = None, device: str = "cpu") -> Any:
    """A causal LM in train-ready precision: float32 on CPU, bfloat16 on GPU unless told."""
    name = resolve_model(spec)
    local = Path(name).exists()
    if not local:
        hub_check(name)  # before the heavy imports: a bad id fails at once
    import torch
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **_dequantize(name))
    except (OSError, ValueError) as err:
        raise hub_error(name, err, local) from None
    return model.to(device)


def _dequantize(name: str) -> dict[str, Any]:
    """from_pretrained's arguments for a compressed-tensors (GPTQ) directory: its weights
    dequantized to `dtype` as they load, so every engine runs plain linear layers (the packed
    ones are decompressed on the first forward otherwise, after the paged engine has read the
    weights); {} for any other model."""
    cfg = Path(name) / "config.json"
    if not cfg.is_file() or '"compressed-tensors"' not in cfg.read_text():
        return {}
    try:  # compressed-tensors: optional (the `gptq` extra), transformers reads the format with it
        import compressed_tensors  # noqa: F401
        from transformers import CompressedTensorsConfig
    except ImportError:
        raise R1kitError(
            f"{name} is a GPTQ (compressed-tensors) model: pip install compressed-tensors"
        ) from None
    # "the model's quantization_config is used, dequantize overridden": what is meant here
    warnings.filterwarnings("ignore", message="You passed `quantization_config`")
    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def load_model_and_tokenizer(spec: str | None, device: str = "cpu") -> tuple[Any, Any]:
    return load_model(spec, device=device), load_tokenizer(spec)


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> None:
    _quiet_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # safetensors >= 0.8 writes through a temp file made 0600 and renames it (safetensors
    # issue #782): give the weights the mode every other file of the run gets
    for weights in out.glob("*.safetensors"):
        weights.chmod(new_file_mode())
    save_tokenizer(tokenizer, out)


def new_file_mode() -> int:
    """0o666 less the process umask: the mode `open` gives a new file. The umask is read from
    /proc (no change to it, so no race with other threads) where Linux offers it."""
    try:
        status = Path("/proc/self/status").read_text()
        mask = next(int(ln.split()[1], 8) for ln in status.splitlines() if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


NOTE_FILE = "r1kit.json"  # r1kit's note of the prompt format a model was trained with


def save_tokenizer(tokenizer: Any, out_dir: str | Path) -> None:
    """save_pretrained, plus an explicit `"unk_token": null` for byte-level tokenizers without
    one: transformers 5 loads a qwen2-typed dir as Qwen2Tokenizer, which otherwise adds its
    default `<|endoftext|>` as a new id past the model's vocabulary. Beside it, `r1kit.json`
    notes the prompt format (`chat.template_of`), which the chat template itself carries."""
    import json

    tokenizer.save_pretrained(out_dir)
    note = {"template": template_of(tokenizer)}
    (Path(out_dir) / NOTE_FILE).write_text(json.dumps(note, indent=2) + "\n")
    if tokenizer.unk_token is None:
        path = Path(out_dir) / "tokenizer_config.json"
        cfg = json.loads(path.read_text())
        cfg["unk_token"] = None
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
