"""The step-size estimate as a record: ``StepsizeEstimate`` with its diagnostics and JSON form, and how it is
summarised from the per-batch records the estimator collects (L0, K, alpha, the bootstrap interval, the
distributions), so a smaller sample's estimate is a re-summary, not a recomputation."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .formula import Stepsize, aggregate_values, constant_stepsize
from .spectral import seeded_generator

DEFAULT_MULTIPLIERS = (0.5, 1.0, 2.0)  # the authors' grid around alpha


@dataclass
class GroupEstimate:
    """One parameter group's own step size, from the block of the Hessian on that group's parameters; ``alpha``
    is None when the block is zero (no curvature, so the formula sets no limit)."""

    n_params: int
    K: float
    alpha: float | None
    sigma_quantiles: dict[str, float]


@dataclass
class StepsizeEstimate:
    """The result of :func:`estimate_stepsize`: the step size, its inputs, their distributions, and how they
    were obtained. ``alpha`` is a float that scales when called (``alpha(2)``); ``sigma`` holds the per-batch
    spectral norms (per example with ``batch_size=1``), initialisation-major."""

    alpha: float
    K: float
    L0: float
    T: int
    horizon_mode: str
    alpha_interval: tuple[float, float] | None  # bootstrap percentile interval over batches (None: one batch)
    confidence: float
    bootstrap: int
    L0_token_mean: float
    L0_per_example_mean: float
    loss_floor: float
    l0_reduction: str
    aggregate: str
    preset: str
    method: str
    max_iter: int
    rtol: float
    atol: float
    warm_start: bool
    n_inits: int
    seeds: dict[str, Any]
    n_examples_requested: int | None
    n_examples_used: int
    n_excluded: int
    sample: str
    max_tokens: int | None
    batch_size: int
    hvp_engine: str
    hvp_fallback: str | None
    compute_dtype: str
    model_id: str | None
    adapter_config: dict[str, Any] | None
    hvp_count: int
    wall_time_s: float
    peak_memory_bytes: int | None
    sigma_quantiles: dict[str, float]
    lambda_quantiles: dict[str, float]
    converged_fraction: float
    iterations_histogram: dict[str, int]
    degenerate_batches: int
    groups: dict[str, GroupEstimate] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict, repr=False)  # per batch: what subsample() re-aggregates

    def __post_init__(self):
        self.alpha = Stepsize(self.alpha)

    @property
    def sigma(self) -> list[float]:
        return [s for per_init in self.records["s"] for s in per_init]

    @property
    def lambdas(self) -> list[float]:
        return [lam for per_init in self.records["lambda"] for lam in per_init]

    def multipliers(self, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS) -> dict[str, float]:
        return {f"{m:g}": self.alpha(m) for m in multipliers}

    def subsample(self, n_examples: int) -> StepsizeEstimate:
        """The estimate from the first ``n_examples`` examples of this estimate's sample (a whole number of
        batches), without recomputing anything. The sample is a seeded permutation and warm starts only look
        back, so this equals ``estimate_stepsize(..., n_examples=n_examples)`` with the same seed whenever no
        example was excluded by ``max_tokens``."""
        sizes = self.records["batch_examples"]
        ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        if n_examples not in ends:
            raise ValueError(f"n_examples must end a batch ({self.batch_size} per batch, {self.n_examples_used} "
                             f"examples), got {n_examples}")
        n_batches = ends.index(n_examples) + 1
        records = {key: _prefix(value, n_batches) for key, value in self.records.items()}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(n_examples_requested=n_examples, n_examples_used=n_examples, n_excluded=0,
                      groups={label: group.n_params for label, group in self.groups.items()})
        return summarise(fields, records)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (spec §7.4): every field, ``K`` as ``K_hat``, the distributions as ``s`` and
        ``lambda``, the multiplied step sizes, and the per-batch records."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["alpha"] = float(self.alpha)
        record["groups"] = {name: dataclasses.asdict(group) for name, group in self.groups.items()}
        for name, key in _JSON_KEYS.items():
            record[key] = record.pop(name)
        return {"alpha": record.pop("alpha"), "multipliers": self.multipliers(), **record}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> StepsizeEstimate:
        record = dict(record)
        record.pop("multipliers", None)
        for name, key in _JSON_KEYS.items():
            record[name] = record.pop(key)
        record["groups"] = {name: GroupEstimate(**group) for name, group in record["groups"].items()}
        if record["alpha_interval"] is not None:
            record["alpha_interval"] = tuple(record["alpha_interval"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"not a step-size estimate record: unknown fields {', '.join(unknown)}")
        return cls(**record)

    @classmethod
    def load(cls, path: str | Path) -> StepsizeEstimate:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no step-size estimate at {path}")
        try:
            record = json.loads(path.read_text())
            # `adamlab lr --json` wraps the estimate with how it resolved (method, lr, batch size, ...).
            if isinstance(record.get("estimate"), dict):
                record = record["estimate"]
            return cls.from_dict(record)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a step-size estimate record ({error})") from None


_JSON_KEYS = {"K": "K_hat", "sigma_quantiles": "s", "lambda_quantiles": "lambda",
              "iterations_histogram": "iterations"}


def _summary(values: Tensor) -> dict[str, float]:
    levels = torch.tensor([0.0, 0.5, 0.9, 0.99, 1.0], dtype=torch.float64)
    quantiles = torch.quantile(values.to(torch.float64), levels).tolist()
    return dict(zip(("min", "median", "p90", "p99", "max"), quantiles))


def _prefix(value: Any, n_batches: int) -> Any:
    """Per-batch records cut to their first ``n_batches`` batches (lists per initialisation are cut each)."""
    if isinstance(value, dict):
        return {key: _prefix(item, n_batches) for key, item in value.items()}
    if value and isinstance(value[0], list):
        return [per_init[:n_batches] for per_init in value]
    return value[:n_batches]


def summarise(fields: dict[str, Any], records: dict[str, Any]) -> StepsizeEstimate:
    """The estimate from per-batch records: L0, K, alpha, the bootstrap interval and the distributions."""
    losses = torch.tensor(records["batch_loss"], dtype=torch.float64)
    targets = torch.tensor(records["batch_targets"], dtype=torch.float64)
    examples = torch.tensor(records["batch_examples"], dtype=torch.float64)
    example_sums = torch.tensor(records["example_loss_sum"], dtype=torch.float64)
    s = torch.tensor(records["s"], dtype=torch.float64)  # (inits, batches)
    T, floor, aggregate = fields["T"], fields["loss_floor"], fields["aggregate"]

    def l0_of(index: Tensor) -> Tensor:  # index: (..., batches) resampled batch indices
        if fields["l0_reduction"] == "token_mean":
            return (losses[index] * targets[index]).sum(-1) / targets[index].sum(-1)
        return example_sums[index].sum(-1) / examples[index].sum(-1)

    all_batches = torch.arange(len(losses))
    l0 = l0_of(all_batches).item()
    K = aggregate_values(s.flatten(), aggregate).item()
    alpha = constant_stepsize(l0, K, T, floor)

    interval = None
    if fields["bootstrap"] > 0 and len(losses) > 1:  # one batch has nothing to resample
        generator = seeded_generator(fields["seeds"]["seed"], "bootstrap")
        alpha_star = []
        for chunk in range(0, fields["bootstrap"], 64):  # bounded memory with tens of thousands of batches
            replicates = min(64, fields["bootstrap"] - chunk)
            index = torch.randint(len(losses), (replicates, len(losses)), generator=generator)
            resampled_s = s[:, index].permute(1, 0, 2).flatten(1)  # (replicates, inits * batches)
            k_star = aggregate_values(resampled_s, aggregate)
            alpha_star.append(torch.sqrt(2 * (l0_of(index) - floor).clamp(min=0) / (k_star * T)))
        alpha_star = torch.cat(alpha_star)
        tail = (1 - fields["confidence"]) / 2
        low, high = torch.quantile(alpha_star, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
        interval = (low, high)

    group_estimates = {}
    for label, n_params in fields["groups"].items():
        group_s = torch.tensor(records["group_s"][label], dtype=torch.float64)
        group_k = aggregate_values(group_s.flatten(), aggregate).item()
        group_alpha = constant_stepsize(l0, group_k, T, floor) if group_k > 0 else None
        group_estimates[label] = GroupEstimate(n_params, group_k, group_alpha, _summary(group_s.flatten()))

    iterations = [k for per_init in records["iterations"] for k in per_init]
    converged = [c for per_init in records["converged"] for c in per_init]
    degenerate = [d for per_init in records["degenerate"] for d in per_init]
    values = {
        **{k: v for k, v in fields.items() if k != "groups"},
        "alpha": alpha, "K": K, "L0": l0, "alpha_interval": interval,
        "L0_token_mean": ((losses * targets).sum() / targets.sum()).item(),
        "L0_per_example_mean": (example_sums.sum() / examples.sum()).item(),
        "hvp_count": sum(records["hvps"]), "wall_time_s": math.fsum(records["seconds"]),
        "sigma_quantiles": _summary(s.flatten()),
        "lambda_quantiles": _summary(torch.tensor(records["lambda"], dtype=torch.float64).flatten()),
        "converged_fraction": sum(converged) / len(converged),
        "iterations_histogram": {str(k): n for k, n in sorted(Counter(iterations).items())},
        "degenerate_batches": sum(degenerate),
        "groups": group_estimates, "records": records,
    }
    return StepsizeEstimate(**values)
