"""The procedural pretraining corpus: worked solutions of varying quality, in the R1-Zero format.

Each document is an R1-Zero prompt and a completion whose reasoning style (careful, slipping,
self-correcting, guessing) and answer format (tagged or not) are drawn at random, so the
pretrained base model is mediocre in just the ways R1-Zero's RL can fix: it often guesses instead
of working, makes slips, and forgets the <answer> tags. Only train-split problems are used.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from r1kit.chat import r1zero_prompt
from r1kit.data.tasks import MIX_TASKS, TASKS, stream

# Style mix: near-balanced between working and guessing, so sampling at low temperature still
# leaves the base model undecided (a decisive majority would be sharpened away by T=0.6).
STYLE_WEIGHTS = {"careful": 0.36, "slip": 0.12, "corrected": 0.07, "guess": 0.45}
# Answer formats after the reasoning; only the first earns the R1-Zero format reward.
FORMATS = {
    "tagged": (0.50, " </think> <answer> {a} </answer>"),
    "tagged_tight": (0.05, " </think>\n<answer>{a}</answer>"),
    "plain": (0.25, " </think> The answer is {a}."),
    "label": (0.10, " </think>\nAnswer: {a}"),
    "unclosed": (0.10, " So the answer is {a}."),
}


def completion(example: dict, rng: random.Random) -> str:
    """One worked completion (the text after the prompt's `<think>`)."""
    style = rng.choices(list(STYLE_WEIGHTS), weights=list(STYLE_WEIGHTS.values()))[0]
    reasoning, answer = TASKS[example["task"]].trace(example, rng, style)
    fmt = rng.choices([f for _, f in FORMATS.values()], weights=[w for w, _ in FORMATS.values()])[0]
    return " " + reasoning + fmt.format(a=answer)


def documents(seed: int, tasks: tuple[str, ...] = MIX_TASKS) -> Iterator[str]:
    """Endless prompt+completion documents over the given tasks, reproducible from the seed."""
    rng = random.Random(seed)
    streams = [stream(TASKS[t], "train", seed + i) for i, t in enumerate(tasks)]
    while True:
        ex = next(rng.choice(streams))
        yield r1zero_prompt(ex["question"]) + completion(ex, rng)
