"""`r1kit pretrain`'s settings (PretrainConfig) and its named sizes (PRESETS, `--preset`); no
torch here, so the CLI names the presets before anything loads."""

from __future__ import annotations

from dataclasses import dataclass, replace

from r1kit.data.tasks import MIX_TASKS


@dataclass
class PretrainConfig:
    out: str = "runs/pretrain-tiny"
    seed: int = 0
    vocab_size: int = 1024  # an upper bound: the corpus' vocabulary is smaller
    tokenizer_docs: int = 20_000
    hidden_size: int = 192
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 512
    block_len: int = 256
    batch_size: int = 16
    steps: int = 1600
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.1
    threads: int = 2
    device: str = "cpu"  # the shipped weights are built on CPU; "cuda" for quick experiments
    tasks: tuple[str, ...] = MIX_TASKS  # the procedural tasks whose worked traces make the corpus
    nan_policy: str = "stop"  # a non-finite step: stop the run, or skip it (train/finite.py)
    overwrite: bool = False  # replace an earlier run in OUT (else OUT must be new or empty)


PRESETS = {
    "tiny": PretrainConfig(),
    # a student half the size of the embedded default for distillation (same depth, 2/3 of the
    # width, 3/4 of the tokens): `r1kit distill --student runs/pretrain-tiny-student`. Depth
    # matters here: a 2-layer, full-width student learned the format from traces but not the sums.
    "tiny-student": PretrainConfig(
        out="runs/pretrain-tiny-student", hidden_size=128, intermediate_size=384, steps=1200
    ),
    # the GPU base for `r1kit zero --preset gpu-small`: ~25M parameters, 98M tokens
    "gpu-small": PretrainConfig(
        out="runs/pretrain-gpu-small",
        hidden_size=512,
        layers=8,
        heads=8,
        kv_heads=4,
        intermediate_size=1536,
        block_len=512,
        batch_size=64,
        steps=3000,
        lr=1.5e-3,
        warmup=100,
        device="cuda",
    ),
}
# the base for `r1kit zero --preset gpu-code`: gpu-small's shape on worked code traces only
PRESETS["gpu-code"] = replace(
    PRESETS["gpu-small"], out="runs/pretrain-gpu-code", steps=1500, tasks=("code",)
)
