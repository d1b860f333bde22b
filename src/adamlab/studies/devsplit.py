"""The dev split of a recommendation: carved from the task's training data before anything trains.

Every selection decision (which trials survive a rung, which configuration wins) is made on this split, never on
the test split. The carve is a function of the study seed alone, stratified by label where the task has labels,
and written as two JSON Lines files (``train.jsonl``: what the trials train on, ``dev.jsonl``: what they are
evaluated on) that the trials read through the ordinary ``train_source`` / ``eval_source`` fields, so the training
loop needs nothing special. The record keeps the sizes and a hash of each side's example ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks.base import Task

MIN_DEV_EXAMPLES = 200  # where the data allows: fewer makes a rung's ranking mostly noise (SE ~ 0.035 at 200)


@dataclass(frozen=True)
class DevSplit:
    train_file: str
    dev_file: str
    n_train: int
    n_dev: int
    seed: int
    fraction: float
    stratified: bool
    train_ids_sha256: str
    dev_ids_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dev_size(n: int, fraction: float, minimum: int = MIN_DEV_EXAMPLES) -> int:
    """``fraction`` of ``n``, raised to ``minimum`` where the data allows, never more than half of it."""
    if not 0 < fraction < 1:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction!r}")
    half = n // 2
    size = min(max(round(fraction * n), min(minimum, half)), half)
    if size < 1:
        raise ValueError(f"{n} training examples are too few to carve a dev split from")
    return size


def stratified_indices(labels: list[int | None], size: int, seed: int) -> np.ndarray:
    """``size`` indices drawn without replacement, each label getting its share of the draw (largest remainders).
    Written here rather than taken from scikit-learn, which is not one of adamlab's runtime dependencies."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if any(label is None for label in labels):
        return np.sort(rng.permutation(n)[:size])
    classes = sorted(set(labels))
    members = {c: np.array([i for i, label in enumerate(labels) if label == c]) for c in classes}
    exact = np.array([size * len(members[c]) / n for c in classes])
    quota = np.floor(exact).astype(int)
    for extra in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[extra] += 1
    chosen = [rng.permutation(members[c])[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def _ids_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
    temporary.replace(path)  # atomic: a killed carve leaves the old file or none


def carve_dev_split(task: Task, folder: str | Path, *, seed: int, fraction: float = 0.1,
                    source: str | None = None) -> DevSplit:
    """Split the training data of ``task`` (the bundled sample, or ``source``) into train and dev files in
    ``folder``; the same seed always gives the same split, so a resumed recommendation finds its files unchanged."""
    folder = Path(folder)
    examples = task.load("train", source)  # validates every record, naming the file and line of a bad one
    # The raw records, in the same order, are what gets written: the task reads them back exactly as it read these.
    records, _ = task._read("train", source)
    size = dev_size(len(examples), fraction)
    dev = set(stratified_indices([e.label for e in examples], size, seed).tolist())
    folder.mkdir(parents=True, exist_ok=True)
    train_file, dev_file = folder / "train.jsonl", folder / "dev.jsonl"
    _write_jsonl(train_file, [records[i] for i in range(len(records)) if i not in dev])
    _write_jsonl(dev_file, [records[i] for i in sorted(dev)])
    return DevSplit(
        train_file=str(train_file.resolve()), dev_file=str(dev_file.resolve()), n_train=len(examples) - size,
        n_dev=size, seed=seed, fraction=fraction, stratified=all(e.label is not None for e in examples),
        train_ids_sha256=_ids_hash([e.id for i, e in enumerate(examples) if i not in dev]),
        dev_ids_sha256=_ids_hash([examples[i].id for i in sorted(dev)]),
    )
