"""Evaluation: benchmarks, the `eval` job (local engine or OpenAI-compatible endpoint), pass@1
over k samples, unbiased pass@k, cons@k, and held-out reports."""
