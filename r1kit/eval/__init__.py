"""Evaluation: pass@1 over k samples, unbiased pass@k, and held-out reports."""
