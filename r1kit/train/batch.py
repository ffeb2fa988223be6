"""Prompt + completion rows -> padded training tensors, and per-token log-probs of completions
under a model: the forward every trainer shares (GRPO, SFT, distillation's student)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from r1kit.train.compile import compiled_chunk_logp


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [N, T] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [N, T]
    completion_mask: torch.Tensor  # [N, T-1] 1 where position t predicts a completion token
    engine_logp: torch.Tensor | None  # [N, T-1] sampler log-probs on completion positions

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def slice(self, i: int, j: int) -> TrainBatch:
        # trim trailing all-pad columns so short micro-batches cost less
        T = int(self.attention_mask[i:j].sum(1).max())
        e = None if self.engine_logp is None else self.engine_logp[i:j, : T - 1]
        return TrainBatch(
            self.input_ids[i:j, :T],
            self.attention_mask[i:j, :T],
            self.completion_mask[i:j, : T - 1],
            e,
        )


def collate(rollouts: Sequence[Any], pad_id: int, mask_truncated: bool = False) -> TrainBatch:
    """[N, T] right-padded rows of `prompt_ids + completion_ids` (a Rollout, an SFT example);
    the loss mask marks positions that predict a completion token. Sampler log-probs ride along
    when every row has them. Overlong filtering (`mask_truncated`): completions cut by max tokens
    (finish_reason "length") get no loss."""
    # one tensor per field, scattered row-major into the padded grid: a per-row loop of
    # torch.tensor calls cost ~0.1 s for 512 x 640 tokens, with the GPU idle at the update's start
    P = torch.tensor([len(r.prompt_ids) for r in rollouts])  # [N]
    L = P + torch.tensor([len(r.completion_ids) for r in rollouts])  # [N] prompt + completion
    N, T = len(rollouts), int(L.max())
    t = torch.arange(T)
    attn = (t < L[:, None]).long()  # [N, T]
    tokens = array("q")  # every row's ids back to back (stdlib array: no per-int objects)
    for r in rollouts:
        tokens.extend(r.prompt_ids)
        tokens.extend(r.completion_ids)
    ids = torch.full((N, T), pad_id, dtype=torch.long)
    ids[attn.bool()] = torch.frombuffer(tokens, dtype=torch.long)
    # position t predicts token t+1: completion positions are P-1 .. P+C-2
    comp = (t[: T - 1] >= P[:, None] - 1) & (t[: T - 1] < L[:, None] - 1)  # [N, T-1]
    scored = torch.tensor(
        [not (mask_truncated and getattr(r, "finish_reason", None) == "length") for r in rollouts]
    )
    cmask = (comp & scored[:, None]).float()
    elp = None
    if all(getattr(r, "logprobs", None) is not None for r in rollouts):
        elp = torch.zeros((N, T - 1))
        lps = array("d")
        for r in rollouts:
            lps.extend(r.logprobs)
        elp[comp] = torch.frombuffer(lps, dtype=torch.float64).float()
    return TrainBatch(ids, attn, cmask, elp)


LOGIT_CHUNK = 4096  # positions per LM-head chunk: [4096, 152k] fp32 logits = 2.5 GB at most
# bytes of LM-head logits one call may keep for its backward instead of recomputing them there
# (the chunks beyond it are checkpointed: one more head GEMM and log-sum-exp pass each, 0.16 s
# of a 2.4 s update on the 0.5B bench); None: an eighth of the GPU's memory, none on the CPU
HEAD_KEEP_BYTES: int | None = None


def to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A host tensor on `dev` without waiting for the device: a copy from pageable memory makes
    the host wait until the GPU has drained its queue, from pinned memory it is queued."""
    if dev.type != "cuda":
        return t.to(dev)
    return t.contiguous().pin_memory().to(dev, non_blocking=True)


def head_keep_bytes(dev: torch.device) -> int:
    """HEAD_KEEP_BYTES as set, or its default for `dev`."""
    if HEAD_KEEP_BYTES is not None:
        return HEAD_KEEP_BYTES
    if dev.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(dev).total_memory // 8


def token_logprobs(
    model,
    batch: TrainBatch,
    temperature: float = 1.0,
    chunk: int | None = None,
    pack: int = 0,
    compile_backend: str | None = None,
) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) / temperature-scaled, [N, T-1], on completion positions (0 elsewhere).

    Never holds full [N, T, V] logits: the decoder's hidden states at completion positions go
    through the LM head `chunk` positions at a time (head_logprobs).
    `pack` > 0 runs the decoder padding-free: sequences are packed into rows of up to `pack`
    tokens with restarting position ids (transformers then masks attention block-diagonally).
    `compile_backend` (e.g. "inductor") runs each LM-head chunk through `torch.compile`.
    No host sync: the positions are found on the host, where the batch is built, and copies
    to the device are queued (to_device).
    """
    dev = next(model.parameters()).device
    N, T = batch.input_ids.shape
    pos_host = batch.completion_mask.flatten().nonzero()[:, 0]  # [M] into the [N*(T-1)] grid
    pos = to_device(pos_host, dev)
    if pack:
        hidden, src = _packed_hidden(model, batch, pack, dev)  # [R*Lr, H], [N*(T-1)]
        h = hidden.index_select(0, src.index_select(0, pos))
    else:
        ids = to_device(batch.input_ids, dev)
        # rows without padding need no mask: attention is causal alone, so transformers need
        # not read the mask back to find out (a sync) and SDPA runs its mask-free kernels
        attn = None if bool(batch.attention_mask.all()) else to_device(batch.attention_mask, dev)
        dec = model.get_decoder()
        hidden = dec(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, pos)  # [M, H]
    target = to_device(batch.input_ids[:, 1:].reshape(-1).index_select(0, pos_host), dev)  # [M]
    head = model.get_output_embeddings()
    vals = head_logprobs(h, head, target, temperature, chunk, compile_backend)
    out = torch.zeros(N * (T - 1), device=dev, dtype=torch.float32)
    return out.index_put((pos,), vals).view(N, T - 1)


def head_logprobs(
    h: torch.Tensor,
    head: torch.nn.Module,
    target: torch.Tensor,
    temperature: float = 1.0,
    chunk: int | None = None,
    compile_backend: str | None = None,
) -> torch.Tensor:
    """log softmax(head(h) / temperature)[target]: hidden states h [M, H], targets [M] -> [M]
    float32, `chunk` positions at a time (LOGIT_CHUNK by default). With gradients the chunks
    past the first HEAD_KEEP_BYTES of logits are recomputed in backward (activation
    checkpointing), so their peak memory is one chunk of logits."""
    chunk = chunk or LOGIT_CHUNK
    # a kept chunk holds its logits as computed when compiled (bf16 on GPU; Inductor recomputes
    # the upcast), else their float32 upcast (which gather and logsumexp both save)
    per_logit = h.element_size() if compile_backend else 4
    keep = head_keep_bytes(h.device) // (per_logit * head.weight.shape[0])  # positions kept
    fn = _chunk_logp
    if compile_backend:
        fn = compiled_chunk_logp(_chunk_logp_fused, compile_backend)
    parts = []
    for i in range(0, h.shape[0], chunk):
        args = (h[i : i + chunk], head.weight, head.bias, target[i : i + chunk], temperature)
        if torch.is_grad_enabled() and min(i + chunk, h.shape[0]) > keep:
            parts.append(checkpoint(fn, *args, use_reentrant=False))
        else:
            parts.append(fn(*args))
    return torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)


def _packed_hidden(model, batch: TrainBatch, cap: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder hidden states of the batch's sequences packed first-fit-decreasing into rows of
    at most max(cap, longest) tokens. Returns hidden [R*Lr, H] and, for every (i, t) of the
    [N, T-1] grid, the flat row index of the position that predicts token t+1 (0 if none)."""
    N, T = batch.input_ids.shape
    lens = batch.attention_mask.sum(1).tolist()
    cap = max(cap, max(lens))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(N), key=lambda i: -lens[i]):
        r = next((k for k, free in enumerate(room) if free >= lens[i]), None)
        if r is None:
            rows.append([])
            room.append(cap)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lens[i]
    Lr = max(cap - free for free in room)
    ids = torch.zeros((len(rows), Lr), dtype=torch.long)
    position = torch.zeros((len(rows), Lr), dtype=torch.long)
    src = torch.zeros((N, T - 1), dtype=torch.long)
    for r, members in enumerate(rows):
        o = 0
        for i in members:
            n = lens[i]
            ids[r, o : o + n] = batch.input_ids[i, :n]
            position[r, o : o + n] = torch.arange(n)
            src[i, : n - 1] = r * Lr + o + torch.arange(n - 1)
            o += n
        position[r, o:] = torch.arange(Lr - o)  # the padded tail is a sequence of its own
    # no cache and no 2D mask: transformers then reads the packing from the position ids
    dec = model.get_decoder()
    out = dec(input_ids=to_device(ids, dev), position_ids=to_device(position, dev), use_cache=False)
    hidden = out.last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]), to_device(src.flatten(), dev)


def _chunk_logp(h, weight, bias, target, temperature: float) -> torch.Tensor:
    logits = torch.nn.functional.linear(h, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(1, target[:, None])[:, 0] - logits.logsumexp(-1)


def _chunk_logp_fused(h, weight, bias, target, temperature: float) -> torch.Tensor:
    """_chunk_logp as torch.compile runs it: the target's logit is a masked sum over the
    vocabulary (exact: one term), which Inductor computes in the log-sum-exp's pass over the
    [chunk, V] logits, and whose gradient joins the softmax's in one elementwise kernel; a
    gather's gradient would scatter into a zeroed [chunk, V] tensor of its own first."""
    logits = torch.nn.functional.linear(h, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature
    hit = torch.arange(logits.shape[1], device=logits.device) == target[:, None]  # [c, V]
    return torch.where(hit, logits, 0.0).sum(-1) - logits.logsumexp(-1)
