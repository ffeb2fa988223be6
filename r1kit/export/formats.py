"""The names of what `r1kit export` writes and checks: the CLI offers them (choices, help) and
`export check --formats` parses them, before anything heavy loads (no torch or numpy here)."""

from __future__ import annotations

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")  # GGUF tensor types (export/gguf.py)
GPTQ_BITS = (4, 8)  # GPTQ weight bits (export/gptq.py)
# `export check --formats`: the original (hf), each GGUF type, each GPTQ width
CHECK_FORMATS = ("hf", *OUTTYPES, "gptq-8", "gptq-4")
# --formats all: the README's table; f32 (the original's weights, lossless) checks the GGUF path
CHECK_ALL = ("hf", "gptq-8", "gptq-4", "f32", "f16", "q8_0", "q4_0")
