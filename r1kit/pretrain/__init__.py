"""Building the embedded default: train the tokenizer, then pretrain a small base model."""
