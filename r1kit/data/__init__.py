"""Datasets: procedural reasoning tasks, JSONL files, and the pretraining corpus."""
