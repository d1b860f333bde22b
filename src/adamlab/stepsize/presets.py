"""The estimator's settings: presets, the arguments a preset sets, and their validation.

Presets (``PRESETS``): ``default`` (512 examples in batches of 16, power iteration to rtol 1e-3, max, T = steps),
``authors_llm`` (the procedure of ``arnabroy734/LLM-AdamDDS-Convergence``: batch 1, the first 50,000 examples, skip
those over 265 tokens, power iteration on H^2 for 5 iterations with absolute tolerance 1e-5, max, per-example L0,
T = 1) and ``paper_alg2`` (the default over 5 initialisations). Arguments given explicitly override the preset.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch

from .formula import quantile_level, resolve_horizon
from .hvp import HVP_ENGINES
from .spectral import METHODS

L0_REDUCTIONS = ("token_mean", "per_example_mean")

SAMPLES = ("random", "first")


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


def estimator_settings(preset: str = "default", **overrides: Any) -> dict[str, Any]:
    """The settings ``estimate_stepsize`` would use: ``preset``'s, with ``overrides`` (its preset-dependent
    arguments; ``FROM_PRESET`` values are ignored) on top, validated. Lets a caller refuse bad input early."""
    unknown = sorted(set(overrides) - set(_DEFAULT))
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}; valid: {', '.join(_DEFAULT)}")
    return resolve_settings(preset, overrides)


def resolve_settings(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
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
        quantile_level(settings["aggregate"])
    if not isinstance(settings["warm_start"], bool):
        raise ValueError(f"warm_start must be True or False, got {settings['warm_start']!r}")
    resolve_horizon(settings["horizon"], 1)  # the value's form; total_steps is checked with the real one
    return settings


def check_options(loss_floor, hvp, compute_dtype, bootstrap, confidence, seed) -> None:
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
