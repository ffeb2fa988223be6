"""The R1 multi-stage recipe (`r1kit pipeline`), rejection sampling (`r1kit sample`) and
distillation (`r1kit distill`)."""
