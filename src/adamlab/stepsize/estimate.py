r"""The AdamDDS step size: a constant Adam learning rate from the loss and the curvature at the start of training.

.. math::

    \alpha = \sqrt{\frac{2\,(L(w_0) - L^*)}{\hat K \, T}}

* $L(w_0)$ (``L0``): the training loss at the weights the optimizer starts from, in eval mode, averaged over the
  estimation sample with the training loss's reduction (token-weighted); the per-example mean of the authors' LLM
  code is recorded too (``l0_reduction`` picks which one enters $\alpha$).
* $L^*$ (``loss_floor``): 0 for cross-entropy, as in both of the authors' codes.
* $\hat K$ (``K``): the smoothness constant, estimated as an aggregate (``max`` by default) over the estimation
  batches of each batch loss's Hessian spectral norm $\sigma_b = \|\nabla^2 L_b(w_0)\|_2$, over the trainable
  parameters (LoRA's A and B). ``n_inits > 1`` adds the paper's Algorithm 2: the same over re-drawn
  initialisations, aggregated together.
* $T$ (``horizon``): the number of optimizer steps of the run, as in the theorem (``"steps"`` with
  ``total_steps``, or an integer). ``"one"`` (or 1) is $T = 1$, which is what the authors' LLM code hard-codes
  although their runs train 3,125 steps: it gives an $\alpha$ $\sqrt{3125} \approx 55.9$ times larger. Both are
  offered; the record always says which.

Presets (``PRESETS``): ``default`` (512 examples in batches of 16, power iteration to rtol 1e-3, max, T = steps),
``authors_llm`` (the procedure of ``arnabroy734/LLM-AdamDDS-Convergence``: batch 1, the first 50,000 examples, skip
those over 265 tokens, power iteration on H^2 for 5 iterations with absolute tolerance 1e-5, max, per-example L0,
T = 1) and ``paper_alg2`` (the default over 5 initialisations). Arguments given explicitly override the preset.

The estimate leaves the model as it found it: mode, dtype and parameter values are restored, and the global RNG
is never drawn from (every random draw has its own generator, seeded from ``seed`` and recorded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .hvp import HVP_ENGINES, HessianVectorProduct, resolve_parameters
from .spectral import METHODS, random_unit_vector, seeded_generator, spectral_norm

L0_REDUCTIONS = ("token_mean", "per_example_mean")
SAMPLES = ("random", "first")
DEFAULT_MULTIPLIERS = (0.5, 1.0, 2.0)  # the authors' grid around alpha


class _FromPreset:
    def __repr__(self) -> str:
        return "<from preset>"


FROM_PRESET: Any = _FromPreset()
"""Default of the arguments a preset sets: the preset's value unless the caller gives one."""

_DEFAULT = {
    "horizon": "steps",
    "l0_reduction": "token_mean",
    "n_examples": 512,
    "sample": "random",
    "batch_size": 16,  # adamlab train's default batch: the curvature the optimizer sees
    "max_tokens": None,
    "method": "power",
    "max_iter": 50,
    "rtol": 1e-3,
    "atol": 0.0,
    "n_inits": 1,
    "aggregate": "max",
    "warm_start": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "default": _DEFAULT,
    "authors_llm": {
        "horizon": "one",
        "l0_reduction": "per_example_mean",
        "n_examples": 50_000,
        "sample": "first",
        "batch_size": 1,
        "max_tokens": 265,
        "method": "power_h2",
        "max_iter": 5,
        "rtol": 0.0,
        "atol": 1e-5,
        "n_inits": 1,
        "aggregate": "max",
        "warm_start": False,
    },
    "paper_alg2": {**_DEFAULT, "n_inits": 5},
}


class Stepsize(float):
    """The step size alpha, a float; calling it scales it: ``estimate.alpha(0.5)`` is alpha / 2."""

    def __call__(self, multiplier: float = 1.0) -> float:
        return float(self) * multiplier


def constant_stepsize(loss0: float, smoothness: float, horizon: int, loss_floor: float = 0.0) -> float:
    r"""$\alpha = \sqrt{2 (L_0 - L^*) / (K T)}$, refusing inputs for which it is undefined or meaningless."""
    if not loss0 - loss_floor > 0:
        raise ValueError(f"L0 - loss_floor must be > 0, got L0={loss0}, loss_floor={loss_floor}")
    if not smoothness > 0 or not math.isfinite(smoothness):
        raise ValueError(f"the curvature estimate K must be finite and > 0, got {smoothness}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"the horizon T must be an int >= 1, got {horizon!r}")
    return math.sqrt(2.0 * (loss0 - loss_floor) / (smoothness * horizon))


def resolve_horizon(horizon: str | int, total_steps: int | None = None) -> tuple[int, str]:
    """``(T, mode)``: ``"steps"`` is ``total_steps`` (the planned run's optimizer steps, what the theorem means),
    ``"one"`` or 1 is T = 1 (the authors' LLM code), another integer n is T = n."""
    if horizon == "steps":
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"horizon 'steps' needs total_steps, the planned run's optimizer steps (an int >= 1), "
                             f"got {total_steps!r}")
        return total_steps, "steps"
    if horizon == "one" or (isinstance(horizon, int) and not isinstance(horizon, bool) and horizon == 1):
        return 1, "one"
    if isinstance(horizon, int) and not isinstance(horizon, bool) and horizon > 1:
        return horizon, "fixed"
    raise ValueError(f"horizon must be 'steps', 'one' or an int >= 1, got {horizon!r}")


def aggregate_values(values: Tensor, aggregate: str, dim: int = -1) -> Tensor:
    """``"max"``, ``"mean"`` or ``"quantile:<q>"`` (0 <= q <= 1, linear interpolation) along ``dim``."""
    if aggregate == "max":
        return values.amax(dim)
    if aggregate == "mean":
        return values.mean(dim)
    return torch.quantile(values, _quantile_level(aggregate), dim=dim)


def _quantile_level(aggregate: str) -> float:
    kind, _, level = aggregate.partition(":")
    try:
        q = float(level)
    except ValueError:
        q = math.nan
    if kind != "quantile" or not 0.0 <= q <= 1.0:
        raise ValueError(f"aggregate must be 'max', 'mean' or 'quantile:<q>' with 0 <= q <= 1, got {aggregate!r}")
    return q


def by_lora_matrix(name: str) -> str:
    """A ``groups`` function: LoRA's A matrices, its B matrices, and every other trainable parameter. At PEFT's
    initialisation B = 0, so the loss is linear in A there and the A block of the Hessian is zero: group
    ``lora_A`` gets K = 0 and no step size (``alpha=None``)."""
    return "lora_A" if ".lora_A." in name else "lora_B" if ".lora_B." in name else "other"


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
        return _summarise(fields, records)

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
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a step-size estimate record ({error})") from None


_JSON_KEYS = {"K": "K_hat", "sigma_quantiles": "s", "lambda_quantiles": "lambda",
              "iterations_histogram": "iterations"}


def estimate_stepsize(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, list], Tensor],
    data: Sequence,
    *,
    params: str | Sequence[Tensor] = "trainable",
    horizon: str | int = FROM_PRESET,
    total_steps: int | None = None,
    loss_floor: float = 0.0,
    l0_reduction: str = FROM_PRESET,
    n_examples: int | None = FROM_PRESET,
    sample: str = FROM_PRESET,
    batch_size: int = FROM_PRESET,
    max_tokens: int | None = FROM_PRESET,
    method: str = FROM_PRESET,
    max_iter: int = FROM_PRESET,
    rtol: float = FROM_PRESET,
    atol: float = FROM_PRESET,
    n_inits: int = FROM_PRESET,
    aggregate: str = FROM_PRESET,
    warm_start: bool = FROM_PRESET,
    seed: int = 0,
    hvp: str = "auto",
    compute_dtype: torch.dtype | None = None,
    preset: str = "default",
    groups: Callable[[str], str] | None = None,
    targets_fn: Callable[[list], int] | None = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    model_id: str | None = None,
    adapter_config: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StepsizeEstimate:
    r"""Estimate the AdamDDS step size of ``model`` on ``data``.

    ``loss_fn(model, batch)``: the training loss of ``batch`` (a list of ``data`` items) as a scalar, with the
    training loss's masking and reduction (its mean over the batch's loss targets). ``targets_fn(batch)``: the
    number of loss targets in a batch, to weight batches into the token mean (default: the number of examples).

    Sample and batches (preset defaults in brackets): ``n_examples`` items [512; None: all], ``sample`` the first
    ones or a seeded random subset ["random"]; with ``max_tokens``, items with more ``input_ids`` are dropped and
    counted [None]; ``batch_size`` items per loss [16].

    Curvature: per batch, the spectral norm of the Hessian over ``params`` (default: the trainable ones) by
    ``method`` ["power"], ``max_iter`` [50], ``rtol`` [1e-3], ``atol`` [0] (see :mod:`adamlab.stepsize.spectral`),
    each batch starting from the previous batch's top eigenvector when ``warm_start`` [True], else from a vector
    seeded by (seed, init, batch). ``aggregate`` ["max"]: "max", "mean" or "quantile:<q>" over all batches and
    initialisations. ``n_inits`` [1]: initialisation 0 is the model's own $w_0$; the others re-draw the trainable
    parameters (LoRA A: PEFT's Kaiming-uniform, LoRA B: 0, other matrices: Kaiming-uniform; vectors keep their
    values). ``hvp``: the product engine ("auto", "double_backward", "jvp"). ``compute_dtype``: cast the model
    for the estimate (e.g. ``torch.float64``) and back afterwards.

    ``groups(name) -> label`` adds one step size per parameter group, from the Hessian block of that group (e.g.
    :func:`by_lora_matrix`). ``bootstrap`` resamples of the batches give a ``confidence`` interval of alpha;
    for ``aggregate="max"`` a resample's max can never exceed the sample's, so the interval only shows how much
    larger alpha would be on less extreme batches, not how much a larger sample would lower it.
    """
    overrides = {
        "horizon": horizon, "l0_reduction": l0_reduction, "n_examples": n_examples, "sample": sample,
        "batch_size": batch_size, "max_tokens": max_tokens, "method": method, "max_iter": max_iter, "rtol": rtol,
        "atol": atol, "n_inits": n_inits, "aggregate": aggregate, "warm_start": warm_start,
    }
    settings = _resolve_settings(preset, overrides)
    T, horizon_mode = resolve_horizon(settings["horizon"], total_steps)
    _check_options(loss_floor, hvp, compute_dtype, bootstrap, confidence, seed)
    named = resolve_parameters(model, params)
    tensors = [p for _, p in named]
    group_members = _group_members([name for name, _ in named], groups)
    items, n_excluded = _estimation_sample(data, settings, seed)
    size = settings["batch_size"]
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    count_targets = targets_fn or len
    n_inits = settings["n_inits"]

    records: dict[str, Any] = {
        "batch_examples": [len(b) for b in batches], "batch_targets": [], "batch_loss": [],
        "example_loss_sum": [], "seconds": [0.0] * len(batches), "hvps": [0] * len(batches),
        "s": [], "lambda": [], "residual": [], "iterations": [], "converged": [], "degenerate": [],
        "group_s": {label: [] for label in group_members},
    }
    engines: set[str] = set()
    fallback = None
    with _estimation_state(model, tensors, compute_dtype, restore_values=n_inits > 1):
        for init in range(n_inits):
            if init > 0:
                _reinitialise(named, seeded_generator(seed, "init", init))
            per_init = {key: [] for key in ("s", "lambda", "residual", "iterations", "converged", "degenerate")}
            group_s = {label: [] for label in group_members}
            warm = {}
            for b, batch in enumerate(batches):
                batch_started = time.perf_counter()
                product = HessianVectorProduct(lambda batch=batch: loss_fn(model, batch), tensors, model=model,
                                               engine=hvp)
                if init == 0:
                    _record_losses(records, model, loss_fn, batch, product.loss, count_targets(batch))
                result = _spectral(product, tensors, None, warm, settings, seed, init, b)
                for key, value in (("s", result.spectral_norm), ("lambda", result.rayleigh_quotient),
                                   ("residual", result.residual), ("iterations", result.iterations),
                                   ("converged", result.converged), ("degenerate", result.degenerate)):
                    per_init[key].append(value)
                for label, members in group_members.items():
                    block = product.block(members)
                    group_result = _spectral(block, [tensors[i] for i in members], label, warm, settings, seed,
                                             init, b)
                    group_s[label].append(group_result.spectral_norm)
                engines.add(product.engine)
                fallback = fallback or product.fallback_reason
                records["hvps"][b] += product.count
                records["seconds"][b] += time.perf_counter() - batch_started
                if progress is not None:
                    progress(init * len(batches) + b + 1, n_inits * len(batches))
            for key, values in per_init.items():
                records[key].append(values)
            for label, values in group_s.items():
                records["group_s"][label].append(values)

    fields = {
        **settings, "T": T, "horizon_mode": horizon_mode, "loss_floor": float(loss_floor), "preset": preset,
        "confidence": confidence, "bootstrap": bootstrap, "seeds": _seed_record(seed),
        "n_examples_requested": settings["n_examples"], "n_examples_used": len(items), "n_excluded": n_excluded,
        "hvp_engine": "+".join(sorted(engines)), "hvp_fallback": fallback,
        "compute_dtype": str(compute_dtype or tensors[0].dtype).removeprefix("torch."), "model_id": model_id,
        "adapter_config": adapter_config, "peak_memory_bytes": _peak_memory_bytes(tensors[0].device),
        "groups": {label: sum(tensors[i].numel() for i in members) for label, members in group_members.items()},
    }
    del fields["horizon"], fields["n_examples"]
    return _summarise(fields, records)


# ------------------------------------------------------------------------------------------------ internals


def estimator_settings(preset: str = "default", **overrides: Any) -> dict[str, Any]:
    """The settings ``estimate_stepsize`` would use: ``preset``'s, with ``overrides`` (its preset-dependent
    arguments; ``FROM_PRESET`` values are ignored) on top, validated. Lets a caller refuse bad input early."""
    unknown = sorted(set(overrides) - set(_DEFAULT))
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}; valid: {', '.join(_DEFAULT)}")
    return _resolve_settings(preset, overrides)


def _resolve_settings(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if preset not in PRESETS:
        close = difflib.get_close_matches(str(preset), PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {preset!r}.{hint} Valid: {', '.join(PRESETS)}")
    settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not FROM_PRESET}}
    for name in ("batch_size", "max_iter", "n_inits"):
        _check_int(settings[name], name, minimum=1)
    for name in ("n_examples", "max_tokens"):
        if settings[name] is not None:
            _check_int(settings[name], name, minimum=1)
    if settings["l0_reduction"] not in L0_REDUCTIONS:
        raise ValueError(f"l0_reduction must be one of {', '.join(L0_REDUCTIONS)}, got {settings['l0_reduction']!r}")
    if settings["sample"] not in SAMPLES:
        raise ValueError(f"sample must be one of {', '.join(SAMPLES)}, got {settings['sample']!r}")
    if settings["method"] not in METHODS:
        raise ValueError(f"unknown method {settings['method']!r}; valid: {', '.join(METHODS)}")
    for name in ("rtol", "atol"):
        if not isinstance(settings[name], (int, float)) or not settings[name] >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {settings[name]!r}")
    if settings["aggregate"] not in ("max", "mean"):
        _quantile_level(settings["aggregate"])
    if not isinstance(settings["warm_start"], bool):
        raise ValueError(f"warm_start must be True or False, got {settings['warm_start']!r}")
    resolve_horizon(settings["horizon"], 1)  # the value's form; total_steps is checked with the real one
    return settings


def _check_options(loss_floor, hvp, compute_dtype, bootstrap, confidence, seed) -> None:
    if not isinstance(loss_floor, (int, float)) or not math.isfinite(loss_floor):
        raise ValueError(f"loss_floor must be a finite number, got {loss_floor!r}")
    if hvp not in HVP_ENGINES:
        raise ValueError(f"unknown HVP engine {hvp!r}; valid: {', '.join(HVP_ENGINES)}")
    if compute_dtype is not None and not (isinstance(compute_dtype, torch.dtype) and compute_dtype.is_floating_point):
        raise ValueError(f"compute_dtype must be a floating torch dtype or None, got {compute_dtype!r}")
    _check_int(bootstrap, "bootstrap", minimum=0)
    _check_int(seed, "seed", minimum=0)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _group_members(names: list[str], groups: Callable[[str], str] | None) -> dict[str, list[int]]:
    members: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if groups is not None:
            members.setdefault(str(groups(name)), []).append(i)
    return members


def _estimation_sample(data: Sequence, settings: dict[str, Any], seed: int) -> tuple[list, int]:
    """The examples to estimate on, in batch order, and how many ``max_tokens`` excluded. A random sample is a
    prefix of one seeded permutation, so a smaller sample is the start of a larger one."""
    data = list(data)
    if not data:
        raise ValueError("no examples to estimate on")
    n = len(data) if settings["n_examples"] is None else min(settings["n_examples"], len(data))
    if settings["sample"] == "first":
        chosen = data[:n]
    else:
        chosen = [data[i] for i in torch.randperm(len(data), generator=seeded_generator(seed, "sample"))[:n].tolist()]
    if settings["max_tokens"] is None:
        return chosen, 0
    if not all(hasattr(item, "input_ids") for item in chosen):
        raise ValueError("max_tokens needs examples with input_ids (encoded examples)")
    kept = [item for item in chosen if len(item.input_ids) <= settings["max_tokens"]]
    if not kept:
        raise ValueError(f"every one of the {n} examples is longer than max_tokens={settings['max_tokens']}")
    return kept, n - len(kept)


@contextlib.contextmanager
def _estimation_state(model: nn.Module, tensors: list[Tensor], compute_dtype: torch.dtype | None,
                      restore_values: bool) -> Iterator[None]:
    """Eval mode (dropout off; Hugging Face models checkpoint activations only in training mode, and reentrant
    checkpointing would break double backward), the compute dtype, and afterwards the caller's mode, dtype and
    parameter values."""
    was_training = model.training
    original_dtype = None
    if compute_dtype is not None:
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if len(dtypes) != 1:
            raise ValueError(f"compute_dtype needs a model in one floating dtype; it has {sorted(map(str, dtypes))}")
        original_dtype = dtypes.pop()
    saved = [p.detach().clone() for p in tensors] if restore_values else None
    try:
        model.eval()
        if compute_dtype is not None:
            model.to(compute_dtype)
        yield
    finally:
        if original_dtype is not None:
            model.to(original_dtype)
        if saved is not None:
            with torch.no_grad():
                for p, value in zip(tensors, saved):
                    p.copy_(value)
        model.train(was_training)


def _reinitialise(named: list[tuple[str, Tensor]], generator: torch.Generator) -> None:
    """A fresh draw of the trainable parameters, as PEFT and torch.nn.Linear initialise them."""
    with torch.no_grad():
        for name, p in named:
            if ".lora_B." in name:
                p.zero_()
            elif p.ndim >= 2:
                fresh = torch.empty(p.shape, dtype=torch.float32)
                nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
                p.copy_(fresh)


def _record_losses(records: dict, model: nn.Module, loss_fn, batch: list, batch_loss: float, targets: int) -> None:
    records["batch_loss"].append(batch_loss)
    records["batch_targets"].append(targets)
    if len(batch) == 1:
        records["example_loss_sum"].append(batch_loss)
        return
    with torch.no_grad():  # the authors' per-example mean needs each example's own mean loss
        records["example_loss_sum"].append(math.fsum(loss_fn(model, [item]).item() for item in batch))


def _spectral(product, tensors, label, warm: dict, settings, seed, init, b):
    start = warm.get(label)
    if start is None:
        parts = (seed, init, b) if label is None else (seed, init, b, label)
        start = random_unit_vector(tensors, seeded_generator(*parts))
    result = spectral_norm(product, start, method=settings["method"], max_iter=settings["max_iter"],
                           rtol=settings["rtol"], atol=settings["atol"])
    if settings["warm_start"] and not result.degenerate:
        warm[label] = result.vector
    return result


def _seed_record(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "derivation": "torch.Generator seeded with int(sha256('/'.join(parts)).hexdigest()[:15], 16)",
        "sample": [seed, "sample"],
        "start_vector": [seed, "<init>", "<batch>", "[group]"],
        "init": [seed, "init", "<init>"],
        "bootstrap": [seed, "bootstrap"],
        "init_0": "the model's own weights (w0)",
    }


def _peak_memory_bytes(device: torch.device) -> int:
    """The process's peak: CUDA allocations on a GPU, resident memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


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


def _summarise(fields: dict[str, Any], records: dict[str, Any]) -> StepsizeEstimate:
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
