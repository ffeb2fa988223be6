"""A simple KV-cached sampler over any `transformers` causal LM.

Prompts are prefilled once (left-padded), the cache is then fanned out to the n samples of each
prompt, and decoding runs one token per step for all live rows; finished rows are dropped from
the cache in batches so short answers stop costing compute. The engine holds the trainer's model
object itself, so weights are always in sync and nothing is copied.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from r1kit.engine.sampler import SamplingRows, row_seed, sample
from r1kit.engine.types import RequestOutput, Sample, SamplingParams, params_per_prompt


class HFEngine:
    def __init__(self, model, pad_token_id: int = 0, max_batch_rows: int = 512) -> None:
        self.model = model
        self.pad_id = pad_token_id
        self.max_batch_rows = max_batch_rows

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[RequestOutput]:
        plist = params_per_prompt(prompts, params)
        outs = [RequestOutput(list(p)) for p in prompts]
        # chunk whole requests so that no chunk holds more than max_batch_rows samples
        chunk: list[int] = []
        for i in range(len(prompts)):
            if chunk and sum(plist[j].n for j in chunk) + plist[i].n > self.max_batch_rows:
                self._run(chunk, outs, plist)
                chunk = []
            chunk.append(i)
        if chunk:
            self._run(chunk, outs, plist)
        return outs

    @torch.inference_mode()
    def _run(self, reqs: list[int], outs: list[RequestOutput], plist: list[SamplingParams]) -> None:
        from transformers import DynamicCache

        was_training = self.model.training
        self.model.eval()
        dev = self.device
        # prefill the distinct prompts, left-padded: ids/mask [P, L]
        L = max(len(outs[r].prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), L), dtype=torch.long)
        for k, r in enumerate(reqs):
            p = outs[r].prompt_ids
            ids[k, L - len(p) :] = torch.tensor(p)
            mask[k, L - len(p) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        ckw = _cache_kwarg(self.model)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{ckw: cache},
        ).logits[:, -1]
        # fan out to rows: one row per sample, sharing the prompt's KV
        fan = torch.tensor([k for k, r in enumerate(reqs) for _ in range(plist[r].n)], device=dev)
        cache.reorder_cache(fan)
        logits, mask, pos = logits[fan], mask[fan], pos[fan][:, -1]
        rows = [(r, j) for r in reqs for j in range(plist[r].n)]
        rp = [plist[r] for r, _ in rows]
        for r in reqs:
            outs[r].samples = [
                Sample([], [] if plist[r].logprobs else None, "length", len(outs[r].prompt_ids))
                for _ in range(plist[r].n)
            ]
        req_seed = {
            r: plist[r].seed if plist[r].seed is not None else random.getrandbits(32) for r in reqs
        }
        seeds = [row_seed(req_seed[r], j) for r, j in rows]
        live = list(range(len(rows)))  # row index for each position in the batch
        for step in range(max(p.max_tokens for p in rp)):
            live_p = [rp[row] for row in live]
            sr = SamplingRows.build(live_p, [seeds[row] for row in live], [step] * len(live), dev)
            tok, lp = sample(logits, sr)
            tok_l, lp_l = tok.tolist(), lp.tolist()
            keep = []
            for b, row in enumerate(live):
                r, j = rows[row]
                s, p = outs[r].samples[j], rp[row]
                s.token_ids.append(tok_l[b])
                if s.logprobs is not None:
                    s.logprobs.append(lp_l[b])
                if tok_l[b] in p.stop_token_ids:
                    s.finish_reason = "stop"
                elif len(s.token_ids) < p.max_tokens:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(live):  # drop finished rows from every per-row tensor and the cache
                kt = torch.tensor(keep, device=dev)
                cache.reorder_cache(kt)
                tok, mask, pos = tok[kt], mask[kt], pos[kt]
                live = [live[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            pos = pos + 1
            logits = self.model(
                input_ids=tok.unsqueeze(1),
                attention_mask=mask,
                position_ids=pos.unsqueeze(1),
                use_cache=True,
                **{ckw: cache},
            ).logits[:, -1]
        if was_training:
            self.model.train()


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x names the cache argument `cache`; earlier, `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
