"""The training substrate GRPO, SFT, pretraining and distillation share: batches, the micro-batch
plan with its padding passes, FSDP sharding, checkpoints, LoRA, compiled log-probs and the run
skeleton."""
