"""Supervised fine-tuning: chat data -> (prompt, completion) token ids -> packed, assistant-only
next-token loss (`r1kit sft`)."""
