"""A learned reward: a sequence classifier (`AutoModelForSequenceClassification`, one logit)
scoring prompt + completion, for prompts without a checkable answer (R1's all-scenario RL).

`reward_model@PATH` in a reward spec loads PATH once (hub id or directory) and scores
sigmoid(logit) in [0, 1]. `train_reward_model` fits one from labelled completions (1 = good,
0 = bad), e.g. the kept and rejected samples of `r1kit sample`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from r1kit.chat import build_prompt
from r1kit.errors import R1kitError
from r1kit.modeling import hub_error, load_tokenizer, resolve_model, save_model
from r1kit.rewards.base import FACTORIES

_LOADED: dict[str, RewardModel] = {}


def classifier_class(name: str):
    """The sequence-classification class for a checkpoint: the one its config names (or the
    causal LM's sibling), else AutoModelForSequenceClassification. Resolving the class directly
    skips the auto mapping's scan of every architecture (about 30 s of imports on a CPU)."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    arch = (AutoConfig.from_pretrained(name).architectures or [""])[0]
    cls = getattr(transformers, arch.replace("ForCausalLM", "ForSequenceClassification"), None)
    return cls if cls is not None and arch else AutoModelForSequenceClassification


def _quiet() -> None:
    """No load report: a fresh score head is expected when starting from a causal LM."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


class RewardModel:
    """score(question, completion, template) -> float in [0, 1]; callable as a reward."""

    def __init__(self, spec: str, device: str = "cpu", max_len: int = 512) -> None:
        import torch

        _quiet()
        name = resolve_model(spec)
        self.tok = load_tokenizer(name)
        try:
            self.model = classifier_class(name).from_pretrained(
                name, num_labels=1, dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            raise hub_error(name, err) from None
        self.model.to(device).eval()
        self.device, self.max_len = device, max_len
        self._cache: dict[tuple[str, str], float] = {}

    def text(self, question: str, completion: str, template: str) -> str:
        return build_prompt(template, question, self.tok) + completion

    def score(self, question: str, completion: str, template: str = "r1zero") -> float:
        key = (question, completion)
        if key not in self._cache:
            self._cache[key] = self.score_batch([question], [completion], template)[0]
            if len(self._cache) > 65536:
                self._cache.clear()
        return self._cache[key]

    def score_batch(
        self, questions: Sequence[str], completions: Sequence[str], template: str = "r1zero"
    ) -> list[float]:
        import torch

        texts = [self.text(q, c, template) for q, c in zip(questions, completions)]
        enc = self.tok(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_len,
            add_special_tokens=template != "chat",
        )
        with torch.no_grad():
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits[:, 0]
        return torch.sigmoid(logits.float()).tolist()

    def __call__(self, completion: str, example: Mapping[str, Any]) -> float:
        return self.score(example["question"], completion, example.get("template", "r1zero"))


def reward_model(path: str) -> RewardModel:
    """The `reward_model@PATH` factory: one loaded model per path."""
    if not path:
        raise R1kitError("reward_model needs a path: reward_model@DIR_OR_HUB_ID")
    if path not in _LOADED:
        _LOADED[path] = RewardModel(path)
    return _LOADED[path]


FACTORIES["reward_model"] = reward_model


def train_reward_model(
    base: str | None,
    rows: Sequence[dict],
    out: str | Path,
    template: str = "r1zero",
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    heldout_share: float = 0.1,
) -> dict:
    """Fit a one-logit classifier on rows {"question", "completion", "label" (0/1)} with binary
    cross-entropy, starting from `base`'s weights (a fresh score head); save it to `out`.
    Returns {"train_acc", "heldout_acc", "n", "wall_s"}."""
    import torch

    _quiet()
    if len({r["label"] for r in rows}) < 2:
        raise R1kitError("a reward model needs both good (1) and bad (0) examples")
    t0 = time.time()
    torch.manual_seed(seed)
    name = resolve_model(base)
    tok = load_tokenizer(name)
    model = classifier_class(name).from_pretrained(name, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_held = int(len(rows) * heldout_share)
    train = rows[n_held:]
    texts = [build_prompt(template, r["question"], tok) + r["completion"] for r in rows]
    labels = torch.tensor([float(r["label"]) for r in rows])
    # balance the classes: each class carries half the loss
    pos = float(labels[n_held:].mean())
    w_pos, w_neg = 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(train) / batch_size)

    def batch(idx: list[int]):
        enc = tok(
            [texts[i] for i in idx],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=512,
            add_special_tokens=template != "chat",
        )
        return enc, labels[idx]

    step = 0
    model.train()
    for _ in range(epochs):
        order = list(range(n_held, len(rows)))
        random.Random(seed + step).shuffle(order)
        for i in range(0, len(order), batch_size):
            enc, y = batch(order[i : i + batch_size])
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
            logit = model(**enc).logits[:, 0]
            w = torch.where(y > 0.5, w_pos, w_neg)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y, weight=w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
    model.eval()

    def acc(idx: list[int]) -> float:
        if not idx:
            return float("nan")
        right = 0
        with torch.no_grad():
            for i in range(0, len(idx), 128):
                enc, y = batch(idx[i : i + 128])
                right += int(((model(**enc).logits[:, 0] > 0).float() == y).sum())
        return right / len(idx)

    save_model(model, tok, out)
    return {
        "n": len(rows),
        "positive_share": pos,
        "train_acc": acc(list(range(n_held, len(rows)))),
        "heldout_acc": acc(list(range(n_held))),
        "wall_s": round(time.time() - t0, 1),
    }
