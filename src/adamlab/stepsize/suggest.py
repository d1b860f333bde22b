r"""Learning-rate suggestions: one record, several methods, all measured on the run's own model, loss and data.

``suggest_lr(method, model, loss_fn, data, make_optimizer, optimizer=..., horizon=...)`` returns an
:class:`LRSuggestion` (the lr, what it was made for, its cost and the method's diagnostics). Methods
(``SUGGESTION_METHODS``):

* ``suggest``: adamlab's suggestion, a fraction (``SUGGEST_FRACTIONS``, by where the run starts: a pretrained model
  or a random initialisation) of the Adaptive Edge of Stability bound :math:`\eta_{\max}`
  (:mod:`adamlab.stepsize.aeos`) of the optimizer asked about, measured after a short warm-up. Each fraction was set
  on some workloads and validated on others (``benchmarks/lr_suggestion.py``, ``docs/lr_suggestion.md``).
* ``aeos``: :math:`\eta_{\max}` itself, the edge past which training is unstable (an upper bound, not advice).
* ``dds``: AdamDDS, :math:`\sqrt{2 L_0 / (K T)}` with :math:`K` at :math:`w_0` and T the run's steps (the theorem).
* ``dds-one``: the same with T = 1 (what the authors' LLM code uses).
* ``dds-warm``: AdamDDS with :math:`K` measured after the warm-up, along the trajectory, instead of at :math:`w_0`
  (LoRA's B = 0 start makes the Hessian there unrepresentative); :math:`L_0` stays the loss at :math:`w_0`.
* ``range-test``: Smith's range test, the steepest-descent point; ``range-test-min10``: a tenth of the lr at the
  minimum loss.

AdamDDS is a theorem about Adam, so the ``dds*`` methods give Adam's step size whatever optimizer is named (their
diagnostics say so); ``suggest``, ``aeos`` and the range tests use the named optimizer itself.

Every method records the largest learning rate it saw to be stable or unstable where it measures one
(``diagnostics["unstable_above"]``: the range test's divergence point, or :math:`\eta_{\max}`), which
:func:`lr_warning` turns into a one-line warning for an lr above it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .aeos import aeos_bound, seeded_batches
from .estimate import estimate_stepsize
from .formula import constant_stepsize
from .hvp import resolve_parameters
from .range_test import lr_range_test

# Of eta_max, by where the run starts: the geometric mean of grid-best lr / eta_max over the workloads it was set on,
# rounded, each fixed before the workloads that validate it were run (benchmarks/lr_suggestion.py,
# docs/lr_suggestion.md). Fine-tuning pretrained weights: the three MiniLM workloads first measured (LoRA on AG News
# 0.11, LoRA on SST-2 0.33, full fine-tune on AG News 0.18; 0.19). Pre-training from a random initialisation: the
# tiny Llama on C4 (0.44) and on WikiText-2 (0.47; 0.45); the fine-tunes' 0.2 cost both 7-9% in perplexity.
SUGGEST_FRACTIONS = {"fine-tune": 0.2, "from-scratch": 0.45}
SUGGESTION_METHODS = {
    "suggest": "a fraction of the Adaptive Edge of Stability bound after a short warm-up ("
               + ", ".join(f"{fraction:.3g} {start}" for start, fraction in SUGGEST_FRACTIONS.items()) + ")",
    "aeos": "the Adaptive Edge of Stability bound eta_max itself (the edge of stability, not advice)",
    "dds": "AdamDDS sqrt(2 L0 / (K T)) with K at w0 and T the run's steps",
    "dds-one": "AdamDDS with T = 1 (the authors' LLM code)",
    "dds-warm": "AdamDDS with K measured after a short warm-up, T the run's steps",
    "range-test": "Smith's range test, steepest descent of the smoothed loss",
    "range-test-min10": "Smith's range test, a tenth of the lr at the minimum loss",
}


@dataclass
class MethodSettings:
    """The cost knobs, kept small so a suggestion costs a few training steps: estimation batches, Hessian-vector
    products (power iterations for dds, Lanczos steps for aeos), warm-up steps and range-test steps."""

    batch_size: int = 16
    n_batches: int = 1  # the sharpness of two batches agreed within 7% on MiniLM + LoRA: the second doubled the cost
    max_iter: int = 20
    warmup_steps: int = 10
    warmup_lr: float = 1e-4
    range_steps: int = 30
    range_min_lr: float = 1e-6
    range_max_lr: float = 1.0
    start: str = "fine-tune"  # where the run starts (a key of SUGGEST_FRACTIONS), which sets suggest's fraction
    fraction: float | None = None  # of eta_max for suggest, instead of SUGGEST_FRACTIONS[start]
    seed: int = 0

    def suggest_fraction(self) -> float:
        return SUGGEST_FRACTIONS[self.start] if self.fraction is None else self.fraction


@dataclass
class LRSuggestion:
    """A learning rate and what it was made for: the method, the optimizer, the horizon (steps) and batch size,
    what it cost, and the method's own diagnostics (JSON-safe)."""

    method: str
    optimizer: str
    lr: float
    horizon: int | None
    batch_size: int
    cost_seconds: float
    diagnostics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_number))
        return path

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> LRSuggestion:
        missing = sorted({"method", "optimizer", "lr", "horizon", "batch_size", "cost_seconds", "diagnostics"}
                         - set(record))
        if missing:
            raise ValueError(f"not a learning-rate suggestion record: missing {', '.join(missing)}")
        return cls(**{key: record[key] for key in cls.__dataclass_fields__})

    @classmethod
    def load(cls, path: str | Path) -> LRSuggestion:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a learning-rate suggestion record ({error})") from None


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def lr_warning(lr: float, suggestion: LRSuggestion) -> str | None:
    """One line when ``lr`` is above the point where ``suggestion``'s method saw training become unstable."""
    limit = suggestion.diagnostics.get("unstable_above")
    if limit is None or not lr > limit:
        return None
    return (f"lr {lr:.3g} is above {limit:.3g}, where {suggestion.method} measured {suggestion.optimizer} "
            f"training to become unstable ({lr / limit:.1f}x); expect divergence or collapse")


def suggest_lr(
    method: str,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, list], Tensor],
    data: Sequence,
    make_optimizer: Callable[[list[Tensor], float], torch.optim.Optimizer],
    *,
    optimizer: str,
    horizon: int,
    settings: MethodSettings | None = None,
    targets_fn: Callable[[list], int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LRSuggestion:
    """The ``method``'s learning rate for training ``model`` on ``loss_fn(model, batch)`` over ``data`` for
    ``horizon`` steps with the optimizer ``make_optimizer(params, lr)`` builds (``optimizer`` is its registry
    name, which the range test also builds by). ``progress(done, total)`` follows the method's own steps (warm-up
    steps, estimation batches, range-test steps). The model comes back as it was."""
    if method not in SUGGESTION_METHODS:
        raise ValueError(f"unknown learning-rate method {method!r}; valid: {', '.join(SUGGESTION_METHODS)}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be the run's steps, an int >= 1, got {horizon!r}")
    settings = settings or MethodSettings()
    if settings.start not in SUGGEST_FRACTIONS:
        raise ValueError(f"unknown start {settings.start!r}; valid: {', '.join(SUGGEST_FRACTIONS)}")
    started = time.perf_counter()
    lr, diagnostics = _METHODS[method](model, loss_fn, list(data), make_optimizer, optimizer, horizon, settings,
                                       targets_fn, progress)
    return LRSuggestion(method, optimizer, lr, horizon, settings.batch_size, time.perf_counter() - started,
                        diagnostics)


def _aeos(model, loss_fn, data, make_optimizer, settings: MethodSettings, progress) -> dict[str, Any]:
    bound = aeos_bound(model, loss_fn, data, make_optimizer, warmup_steps=settings.warmup_steps,
                       warmup_lr=settings.warmup_lr, batch_size=settings.batch_size, n_batches=settings.n_batches,
                       max_iter=settings.max_iter, seed=settings.seed, progress=progress)
    record = bound.to_dict()
    record["unstable_above"] = None if math.isinf(bound.eta_max) else bound.eta_max
    return record


def _suggest(model, loss_fn, data, make_optimizer, optimizer, horizon, settings, targets_fn, progress):
    diagnostics = _aeos(model, loss_fn, data, make_optimizer, settings, progress)
    if diagnostics["unstable_above"] is None:
        raise ValueError("the AEoS warm-up saw no positive curvature: there is no stability bound to take a "
                         "fraction of; use another method")
    fraction = settings.suggest_fraction()
    return fraction * diagnostics["eta_max"], {"fraction": fraction, "start": settings.start, **diagnostics}


def _eta_max(model, loss_fn, data, make_optimizer, optimizer, horizon, settings, targets_fn, progress):
    diagnostics = _aeos(model, loss_fn, data, make_optimizer, settings, progress)
    if diagnostics["unstable_above"] is None:
        raise ValueError("the AEoS warm-up saw no positive curvature: the stability bound is infinite")
    return diagnostics["eta_max"], diagnostics


def _dds(horizon_of: Callable[[int], int]):
    def method(model, loss_fn, data, make_optimizer, optimizer, horizon, settings, targets_fn, progress):
        T = horizon_of(horizon)
        estimate = estimate_stepsize(model, loss_fn, data, horizon=T, total_steps=horizon,
                                     n_examples=settings.batch_size * settings.n_batches,
                                     batch_size=settings.batch_size, max_iter=settings.max_iter, seed=settings.seed,
                                     targets_fn=targets_fn, bootstrap=0, progress=progress)
        return float(estimate.alpha), {"derived_for": "adam", "T": T, "L0": estimate.L0, "K": estimate.K,
                                       "converged_fraction": estimate.converged_fraction,
                                       "hvp_count": estimate.hvp_count}
    return method


def _dds_warm(model, loss_fn, data, make_optimizer, optimizer, horizon, settings, targets_fn, progress):
    """K after ``warmup_steps`` steps of the optimizer at ``warmup_lr``; L0 at w0 (the theorem's L(w0))."""
    tensors = [p for _, p in resolve_parameters(model, "trainable")]
    n_examples = settings.batch_size * settings.n_batches
    saved = [p.detach().clone() for p in tensors]
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            order = seeded_batches(len(data), settings.batch_size, settings.seed, "dds-warm")
            trainer = make_optimizer(tensors, settings.warmup_lr)
            model.train()
            for _ in range(settings.warmup_steps):
                for p in tensors:
                    p.grad = None
                loss_fn(model, [data[i] for i in next(order)]).backward()
                trainer.step()
            for p in tensors:
                p.grad = None
        warm = estimate_stepsize(model, loss_fn, data, horizon=horizon, total_steps=horizon, n_examples=n_examples,
                                 batch_size=settings.batch_size, max_iter=settings.max_iter, seed=settings.seed,
                                 targets_fn=targets_fn, bootstrap=0, progress=progress)
    finally:
        with torch.no_grad():
            for p, value in zip(tensors, saved):
                p.copy_(value)
        model.train(was_training)
    model.eval()
    with torch.no_grad():  # L(w0): the mean loss of n_batches seeded batches
        losses = [loss_fn(model, [data[i] for i in batch]).item() for batch in _sample_batches(data, settings)]
    model.train(was_training)
    loss0 = math.fsum(losses) / len(losses)
    return constant_stepsize(loss0, warm.K, horizon), {
        "derived_for": "adam", "T": horizon, "L0": loss0, "K_warm": warm.K, "warmup_steps": settings.warmup_steps,
        "warmup_lr": settings.warmup_lr, "converged_fraction": warm.converged_fraction,
        "hvp_count": warm.hvp_count}


def _sample_batches(data: list, settings: MethodSettings) -> list[list[int]]:
    order = seeded_batches(len(data), settings.batch_size, settings.seed, "dds-warm-loss")
    return [next(order) for _ in range(settings.n_batches)]


def _range_test(rule: str):
    def method(model, loss_fn, data, make_optimizer, optimizer, horizon, settings, targets_fn, progress):
        result = lr_range_test(model, loss_fn, data, optimizer=optimizer, min_lr=settings.range_min_lr,
                               max_lr=settings.range_max_lr, num_steps=settings.range_steps,
                               batch_size=settings.batch_size, seed=settings.seed, rule=rule, progress=progress)
        # The divergence point: where the smoothed loss left its minimum by the stop factor (or went non-finite).
        unstable_above = result.lrs[-1] if result.stopped_early else None
        return result.suggested_lr, {"rule": result.rule, "lr_at_min_loss": result.lr_at_min_loss,
                                     "stopped_early": result.stopped_early, "unstable_above": unstable_above,
                                     "num_steps": result.num_steps, "lrs": result.lrs, "losses": result.losses}
    return method


_METHODS = {
    "suggest": _suggest,
    "aeos": _eta_max,
    "dds": _dds(lambda horizon: horizon),
    "dds-one": _dds(lambda horizon: 1),
    "dds-warm": _dds_warm,
    "range-test": _range_test("steepest"),
    "range-test-min10": _range_test("min_div_10"),
}
