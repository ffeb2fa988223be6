"""Text-level sampling below rl/ and eval/: rollouts (prompt encoding, generate, score), the one
held-out evaluation, its statistics (pass@1, unbiased pass@k, cons@k) and the readability
filters."""
