"""Shared by the GGUF tests: prompts, r1kit's PyTorch greedy tokens, a GGUF read back into an HF
model, and how close two greedy token sequences are."""

from __future__ import annotations

import copy

import numpy as np
import torch

from r1kit.chat import BOS, r1zero_prompt

QUESTIONS = [
    "What is 17 + 25?",
    "Solve for x: 3x + 4 = 19.",
    "Using the numbers 3, 5, 7 make 22.",
    "What is 9 * 8 - 6?",
    "Compute 144 / 12 + 7.",
    "If y - 9 = 14, what is y?",
]
PROMPTS = [r1zero_prompt(q) for q in QUESTIONS] + [
    BOS + "<｜User｜>What is 6 * 7?<｜Assistant｜><think>\n",  # the chat template's shape
]
NEW_TOKENS = 48


def prompt_ids(tok, prompt: str) -> list[int]:
    return list(tok(prompt, add_special_tokens=False)["input_ids"])


def torch_greedy(model, tok, prompts=PROMPTS, n: int = NEW_TOKENS) -> list[list[int]]:
    """r1kit's engine at temperature 0 over the PyTorch model; stops after EOS."""
    from r1kit.engine import SamplingParams, make_engine

    eng = make_engine(model, tok.pad_token_id or 0)
    outs = eng.generate(
        [prompt_ids(tok, p) for p in prompts],
        SamplingParams(temperature=0.0, max_tokens=n, stop_token_ids=(tok.eos_token_id,)),
    )
    return [o.samples[0].token_ids for o in outs]


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """Share of sequences equal in full, and mean share of tokens before the first difference."""
    same, prefix = 0, []
    for x, y in zip(a, b):
        k = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        same += x == y
        prefix.append(k / max(len(x), 1))
    return {"identical": same / len(a), "prefix": float(np.mean(prefix))}


def hf_from_gguf(path, like) -> torch.nn.Module:
    """`like` (an HF Qwen2/Llama model) with its weights replaced by the GGUF's, dequantized;
    Llama q/k rows permuted back to HF's layout."""
    import gguf

    from r1kit.export.gguf import LAYER, TOP, llama_permute

    back = {v: k for k, v in {**TOP, **LAYER}.items()}
    cfg = like.config
    model = copy.deepcopy(like)
    sd = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name == "rope_freqs.weight":
            continue
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        data = np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        parts = t.name.split(".")
        if parts[0] == "blk":
            name = f"model.layers.{parts[1]}.{back[parts[2]]}.{parts[3]}"
            if cfg.model_type == "llama" and parts[2] in ("attn_q", "attn_k"):
                heads = cfg.num_attention_heads if parts[2] == "attn_q" else cfg.num_key_value_heads
                data = _unpermute(data, heads, llama_permute)
        else:
            name = f"{back[parts[0]]}.{parts[1]}"
        sd[name] = torch.from_numpy(data.copy())
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model.eval()


def _unpermute(w: np.ndarray, heads: int, permute) -> np.ndarray:
    """The inverse of llama_permute, found by permuting an index vector."""
    idx = permute(np.arange(w.shape[0], dtype=np.float64), heads).astype(np.int64)
    out = np.empty_like(w)
    out[idx] = w
    return out
