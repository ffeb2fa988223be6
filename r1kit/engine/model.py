"""Native decoder for Qwen2 / Qwen2.5, Qwen3 and Llama over a paged KV cache.

It holds no weights of its own when it can avoid it: `NativeDecoder(hf_model)` keeps references
to the `transformers` model's parameter tensors, so a trainer's in-place optimizer step is seen by
the engine at once (weight sync costs nothing). Only when the engine runs in another dtype or on
another device does it own a copy, and `sync()` then copies in place, tensor by tensor.

Tokens are packed: a forward takes [T] token ids from many sequences (prefill) or one token per
sequence (decode), never a padded [B, L] batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r1kit.engine import fused

NATIVE = ("qwen2", "qwen3", "llama")


def supports(config) -> str | None:
    """None when the native decoder can run this config, else the reason it cannot."""
    if config.model_type not in NATIVE:
        return f"architecture {config.model_type!r} (native: {', '.join(NATIVE)})"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    if getattr(config, "quantization_config", None):  # modeling.load_model dequantizes GPTQ
        return "quantized weights (the native decoder reads plain weight matrices)"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) in ("dynamic", "longrope"):
        return "length-dependent rope scaling"
    return None


@dataclass
class Layer:
    ln1: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    q_norm: torch.Tensor | None  # Qwen3: RMSNorm over head_dim on q and k
    k_norm: torch.Tensor | None
    wo: torch.Tensor
    ln2: torch.Tensor
    w_gate: torch.Tensor
    w_up: torch.Tensor
    w_down: torch.Tensor
    bo: torch.Tensor | None = None  # Llama / Qwen3 attention_bias=True: o_proj has a bias too
    b_gate: torch.Tensor | None = None  # Llama mlp_bias=True
    b_up: torch.Tensor | None = None
    b_down: torch.Tensor | None = None


class NativeDecoder:
    def __init__(self, hf_model, dtype: torch.dtype, device: torch.device, max_len: int) -> None:
        reason = supports(hf_model.config)
        if reason:
            raise ValueError(f"native decoder does not support {reason}")
        c = hf_model.config
        self.source = hf_model
        self.num_layers = c.num_hidden_layers
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.vocab_size = c.vocab_size
        self.dtype, self.device = dtype, device
        self._own: dict[str, tuple] = {}  # name -> (engine copy, trainer tensor) when not shared
        self._bind()
        self.cos, self.sin = self._rope_table(max_len)
        self.ops = fused.ops(device)

    # ----------------------------------------------------------------- weights
    def _tensor(self, name: str, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        if t.dtype == self.dtype and t.device == self.device:
            return t.detach()  # shares storage with the trainer's parameter
        own = t.detach().to(self.device, self.dtype).clone()
        self._own[name] = (own, t)
        return own

    def _lora_weight(self, name: str, mod) -> torch.Tensor | None:
        """An engine-owned W + scaling * B @ A for a peft LoRA layer (None for plain layers)."""
        if not hasattr(mod, "lora_A") or not getattr(mod, "active_adapters", None):
            return None
        own = torch.empty_like(mod.base_layer.weight, dtype=self.dtype, device=self.device)
        self._lora[name] = (own, mod)
        _merge_into(own, mod)
        return own

    def _bind(self) -> None:
        m = self.source
        if hasattr(m, "get_base_model"):  # a peft model: bind the adapted transformers model
            m = m.get_base_model()
        self._lora: dict[str, tuple] = {}
        inner = m.model
        p = self._tensor
        self.embed = p("embed", inner.embed_tokens.weight)
        self.norm = p("norm", inner.norm.weight)
        head = m.get_output_embeddings().weight
        tied = head.data_ptr() == inner.embed_tokens.weight.data_ptr()
        self.lm_head = self.embed if tied else p("lm_head", head)
        self.layers = []
        for i, blk in enumerate(inner.layers):
            a, f = blk.self_attn, blk.mlp

            def g(name, mod, attr="weight", i=i):
                if mod is not None and attr == "weight":
                    lw = self._lora_weight(f"{i}.{name}", mod)
                    if lw is not None:
                        return lw
                if mod is not None and hasattr(mod, "base_layer"):
                    mod = mod.base_layer
                t = getattr(mod, attr, None) if mod is not None else None
                return p(f"{i}.{name}", t)

            self.layers.append(
                Layer(
                    g("ln1", blk.input_layernorm),
                    g("wq", a.q_proj),
                    g("wk", a.k_proj),
                    g("wv", a.v_proj),
                    g("bq", a.q_proj, "bias"),
                    g("bk", a.k_proj, "bias"),
                    g("bv", a.v_proj, "bias"),
                    g("qn", getattr(a, "q_norm", None)),
                    g("kn", getattr(a, "k_norm", None)),
                    g("wo", a.o_proj),
                    g("ln2", blk.post_attention_layernorm),
                    g("wg", f.gate_proj),
                    g("wu", f.up_proj),
                    g("wd", f.down_proj),
                    g("bo", a.o_proj, "bias"),
                    g("bg", f.gate_proj, "bias"),
                    g("bu", f.up_proj, "bias"),
                    g("bd", f.down_proj, "bias"),
                )
            )

    @torch.no_grad()
    def sync(self, model=None) -> int:
        """Copy the trainer's current weights into the engine-owned copies, in place (shared
        tensors need nothing). A different model object is re-bound instead. Returns the number
        of tensors copied."""
        if model is not None and model is not self.source:
            c, o = model.config, self.source.config
            dims = (
                "model_type",
                "num_hidden_layers",
                "num_attention_heads",
                "hidden_size",
                "num_key_value_heads",
                "vocab_size",
                "rope_theta",
                "rope_parameters",
            )
            if any(getattr(c, d, None) != getattr(o, d, None) for d in dims):
                raise ValueError(
                    "sync_weights(model) needs the same architecture; build a new engine"
                )
            self.source = model
            self._own.clear()
            self._bind()
            return len(self._own) + len(self._lora)
        for own, src in self._own.values():
            own.copy_(src.detach(), non_blocking=True)
        for own, mod in self._lora.values():
            _merge_into(own, mod)
        return len(self._own) + len(self._lora)

    def _rope_table(self, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [max_len, D] from the model's own rotary module (covers its rope scaling)."""
        m = self.source.get_base_model() if hasattr(self.source, "get_base_model") else self.source
        rot = m.model.rotary_emb
        pos = torch.arange(max_len, device=rot.inv_freq.device)[None]
        x = torch.empty(0, device=rot.inv_freq.device, dtype=torch.float32)
        with torch.no_grad():
            cos, sin = rot(x, pos)
        return cos[0].to(self.device, self.dtype), sin[0].to(self.device, self.dtype)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        ids: torch.Tensor,  # [T] token ids
        positions: torch.Tensor,  # [T]
        attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        last: torch.Tensor | None = None,  # [B] indices of the tokens whose logits are wanted
    ) -> torch.Tensor:
        """Returns logits [B, V] (or [T, V] when `last` is None). `attend(layer, q, k, v)` writes
        k/v [T, Hkv, D] into the cache and returns attention output [T, H, D]."""
        T = ids.shape[0]
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        cos, sin = self.cos[positions], self.sin[positions]
        op = self.ops
        h = F.embedding(ids, self.embed)
        x = op["rms_norm"](h, self.layers[0].ln1, self.eps)
        for i, L in enumerate(self.layers):
            q = F.linear(x, L.wq, L.bq).view(T, H, D)
            k = F.linear(x, L.wk, L.bk).view(T, Hkv, D)
            v = F.linear(x, L.wv, L.bv).view(T, Hkv, D)
            if L.q_norm is not None:
                q, k = op["rms_norm"](q, L.q_norm, self.eps), op["rms_norm"](k, L.k_norm, self.eps)
            q, k = op["rope_qk"](q, k, cos, sin)
            o = attend(i, q, k, v)
            o = F.linear(o.reshape(T, H * D), L.wo, L.bo)
            h, x = op["add_rms_norm"](h, o, L.ln2, self.eps)
            g, u = F.linear(x, L.w_gate, L.b_gate), F.linear(x, L.w_up, L.b_up)
            y = F.linear(op["silu_mul"](g, u), L.w_down, L.b_down)
            nxt = self.layers[i + 1].ln1 if i + 1 < len(self.layers) else self.norm
            h, x = op["add_rms_norm"](h, y, nxt, self.eps)
        if last is not None:
            x = x[last]
        return F.linear(x, self.lm_head)


@torch.no_grad()
def _merge_into(own: torch.Tensor, mod) -> None:
    """own <- W + sum over active adapters of scaling * B @ A (peft's LoRA Linear layout)."""
    w = mod.base_layer.weight.detach().float()
    for name in mod.active_adapters:
        if name in mod.lora_A:
            a, b = mod.lora_A[name].weight.float(), mod.lora_B[name].weight.float()
            w = w + mod.scaling[name] * (b @ a)
    own.copy_(w)
