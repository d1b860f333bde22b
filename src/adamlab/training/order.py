"""A deterministic, resumable example order."""

from __future__ import annotations

import torch


class ExampleOrder:
    """Which examples step t uses: epoch e is a permutation drawn from ``seed + e``, consumed in order, so the
    position in the data is a function of the step alone and a resumed run reads the same batches."""

    def __init__(self, n_examples: int, batch_size: int, seed: int):
        if n_examples < 1:
            raise ValueError("no training examples")
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self._epoch, self._permutation = -1, []

    def _epoch_permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.n, generator=generator).tolist()
        return self._permutation

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [self._epoch_permutation(i // self.n)[i % self.n] for i in range(start, start + self.batch_size)]

    def epoch(self, step: int) -> float:
        return step * self.batch_size / self.n
