"""How sure a recommendation is: bootstrap intervals over seeds and examples, paired differences, P(best).

A configuration's score varies with the training seed and with which examples happen to be in the evaluation
split; the interval must cover both. Each configuration is given as a 0/1 matrix ``correct[seed, example]`` on the
same examples in the same order. One bootstrap draw resamples example indices once (shared by every
configuration, which makes differences paired) and resamples the seeds (shared too when every configuration has
the same seeds); the draw's score is
the mean over the resampled seeds of each seed's accuracy on the resampled examples. Intervals are percentile
intervals of the draws. numpy does the resampling: scipy.stats.bootstrap resamples one level only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` examples."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


@dataclass(frozen=True)
class Interval:
    mean: float
    ci95: tuple[float, float]
    seeds: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci95": list(self.ci95), "seeds": self.seeds}


def bootstrap_draws(correct: dict[str, np.ndarray], resamples: int = RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """For each configuration, ``resamples`` bootstrap replicates of its mean score (two levels: seeds, then
    examples, the example draw shared across configurations)."""
    matrices = {name: np.atleast_2d(np.asarray(m, dtype=float)) for name, m in correct.items()}
    examples = {m.shape[1] for m in matrices.values()}
    if len(examples) != 1:
        raise ValueError(f"configurations were scored on different numbers of examples: {sorted(examples)}")
    n = examples.pop()
    rng = np.random.default_rng(seed)
    example_draws = rng.integers(0, n, size=(resamples, n))
    # Seed i of every configuration trained on the same example order, so when all have the same seeds the seed
    # draw is shared too (paired over both levels); otherwise each configuration draws its own.
    seed_counts = {m.shape[0] for m in matrices.values()}
    shared = None
    if len(seed_counts) == 1:
        seeds = seed_counts.pop()
        shared = rng.integers(0, seeds, size=(resamples, seeds))
    draws = {}
    for name, matrix in matrices.items():
        per_seed = matrix[:, example_draws].mean(axis=-1)  # (seeds, resamples)
        seeds = matrix.shape[0]
        seed_draws = shared if shared is not None else rng.integers(0, seeds, size=(resamples, seeds))
        draws[name] = per_seed[seed_draws, np.arange(resamples)[:, None]].mean(axis=1)
    return draws


def interval(matrix: np.ndarray, draws: np.ndarray) -> Interval:
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(float(np.mean(matrix)), (float(low), float(high)), int(np.atleast_2d(matrix).shape[0]))


def difference(draws: dict[str, np.ndarray], correct: dict[str, np.ndarray], name: str, reference: str) -> dict:
    """Mean of ``name`` minus mean of ``reference``, with its paired 95% interval."""
    delta = draws[name] - draws[reference]
    low, high = np.percentile(delta, [2.5, 97.5])
    return {"mean": float(np.mean(correct[name]) - np.mean(correct[reference])), "ci95": [float(low), float(high)]}


def probability_best(draws: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of draws in which each configuration has the highest score; a draw tied between k of them counts
    1/k to each."""
    names = list(draws)
    stacked = np.stack([draws[name] for name in names])
    top = stacked == stacked.max(axis=0)
    shares = (top / top.sum(axis=0)).mean(axis=1)
    return {name: float(share) for name, share in zip(names, shares)}
