"""`torch.compile` for the update phase (`--compile-update`, on by default on CUDA): where it
pays on a GPU.

The decoder layers' elementwise work (RMSNorm, rotary embedding, SwiGLU, residual adds) is memory
bound and, for small models, a large share of the step; compiling each layer fuses it into a few
kernels around the matmuls. Every layer runs the same code on the same shapes, so one compiled
graph serves them all (dynamic in the sequence length, which changes per micro-batch).
The LM-head chunks (train/batch.py) compile separately so the fp32 upcast of [chunk, vocab] logits
fuses into the log-sum-exp instead of being written out and read back.
"""

from __future__ import annotations

import torch
from torch._dynamo.utils import calculate_time_spent

from r1kit import dist


def compile_wanted(setting: bool | None, model) -> bool:
    """Whether the update runs compiled: `setting` when given (--compile-update /
    --no-compile-update), else (auto) on for full-parameter training on CUDA of an unsharded
    model: one process, or async GRPO's single trainer rank (its update is the one-process
    update).
    Auto leaves it off on the CPU (Inductor's C++ build costs more than small CPU runs save),
    under LoRA (peft's wrapped layers) and under FSDP: neither of those was measured on a GPU."""
    if setting is not None:
        return setting
    params = list(model.parameters())
    full = all(p.requires_grad for p in params)
    return params[0].is_cuda and full and not dist.is_sharded(model)


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (Dynamo's own account: tracing, AOT
    autograd, Inductor's code generation and kernel builds); the difference across an update
    is that update's compile time."""
    t = calculate_time_spent()  # phase -> seconds; the two below hold the others
    return float(t.get("entire_frame_compile", 0.0) + t.get("entire_backward_compile", 0.0))


def compile_decoder_layers(model, backend: str = "inductor") -> int:
    """Compile each decoder layer of `model` (a `transformers` causal LM, or a peft wrapper of
    one) in place; returns how many. The engine is unaffected: it runs its own decoder over the
    same weight tensors."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = base.get_decoder().layers
    for layer in layers:
        layer.compile(backend=backend, dynamic=True)
    return len(layers)


_CHUNK: dict[tuple, object] = {}


def compiled_chunk_logp(fn, backend: str = "inductor"):
    """The LM-head chunk function `fn`, compiled once per backend."""
    if (fn, backend) not in _CHUNK:
        _CHUNK[fn, backend] = torch.compile(fn, backend=backend, dynamic=True)
    return _CHUNK[fn, backend]
