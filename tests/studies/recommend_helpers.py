"""A recommendation small enough for tests: tiny-llama (full fine-tune) on an easy synthetic SST-2 file."""

from __future__ import annotations

import json
import random
from pathlib import Path

from adamlab.studies.recommend import RecommendSettings

DIVERGING_LR = 1e30  # Lion at this rate overflows the weights after one step: a forced divergence


def write_sentiment(path: Path, n: int, seed: int, noise: float = 0.1) -> Path:
    """Sentences of four words from a positive or a negative list; ``noise`` of the labels flipped."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            label = rng.randrange(2)
            words = ["good", "fine", "great", "nice"] if label else ["bad", "awful", "poor", "dull"]
            shown = label if rng.random() >= noise else 1 - label
            f.write(json.dumps({"idx": i, "sentence": " ".join(rng.choice(words) for _ in range(4)),
                                "label": shown}) + "\n")
    return path


def tiny_settings(root: Path, out: str = "rec", **overrides) -> RecommendSettings:
    train = root / "train.jsonl"
    test = root / "test.jsonl"
    if not train.exists():
        write_sentiment(train, 400, seed=0)
        write_sentiment(test, 100, seed=1)
    settings = dict(
        model="tiny-llama", task="sst2", steps=27, out=str(root / out), optimizers=["adamw", "lion"],
        lrs={"adamw": [3e-3, 1e-2], "lion": [1e-3, 3e-3, DIVERGING_LR]}, seeds=2, budget=0.25, min_rung_steps=3,
        train_source=str(train), test_source=str(test),
        train_args={"batch_size": 8, "max_seq_len": 48, "lora": None, "eval_batch_size": 100},
    )
    settings.update(overrides)
    return RecommendSettings(**settings)
