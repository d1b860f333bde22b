"""Learning-rate schedules as plain functions of the optimizer step.

A schedule maps the step t (t = 0 is the first optimizer step) to a multiplier of the base learning rate.
Every schedule is closed-form in t, so a resumed run gets exactly the learning rate of an uninterrupted one:
``create_scheduler`` wraps it in a ``torch.optim.lr_scheduler.LambdaLR`` whose state is just the step.

The pieces compose like optax's: ``cosine(T)`` is a schedule, ``with_warmup(cosine(T - W), W)`` another.
``get_schedule(name, total_steps, warmup_steps, **kw)`` builds one by name, with warmup taking the first W
steps, (t + 1) / W, and the named schedule running on the remaining T - W steps. Past its horizon a schedule
holds its final value.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

Schedule = Callable[[int], float]

__all__ = [
    "Schedule",
    "constant",
    "linear",
    "cosine",
    "exponential",
    "sqrt",
    "inverse_time",
    "step",
    "polynomial",
    "cosine_restarts",
    "wsd",
    "with_warmup",
    "get_schedule",
    "create_scheduler",
    "available_schedules",
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_ratio(value: float, name: str) -> None:
    _check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value!r}")


def _check_steps(value: int, name: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
           f"{name} must be an int >= 1, got {value!r}")


def constant() -> Schedule:
    return lambda t: 1.0


def linear(total_steps: int, min_ratio: float = 0.0) -> Schedule:
    """1 - t/T, falling to ``min_ratio`` at t = T."""
    _check_steps(total_steps, "total_steps")
    _check_ratio(min_ratio, "min_ratio")
    return lambda t: min_ratio + (1.0 - min_ratio) * (1.0 - min(t, total_steps) / total_steps)


def cosine(total_steps: int, min_ratio: float = 0.0) -> Schedule:
    """min_ratio + (1 - min_ratio)(1 + cos(pi t/T))/2."""
    _check_steps(total_steps, "total_steps")
    _check_ratio(min_ratio, "min_ratio")
    return lambda t: min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps))


def exponential(gamma: float) -> Schedule:
    """gamma^t."""
    _check(isinstance(gamma, (int, float)) and 0.0 < gamma <= 1.0, f"gamma must be in (0, 1], got {gamma!r}")
    return lambda t: gamma**t


def sqrt() -> Schedule:
    """1/sqrt(1 + t)."""
    return lambda t: 1.0 / math.sqrt(1.0 + t)


def inverse_time(k: float = 1e-3) -> Schedule:
    """1/(1 + k t)."""
    _check(isinstance(k, (int, float)) and k >= 0, f"k must be >= 0, got {k!r}")
    return lambda t: 1.0 / (1.0 + k * t)


def step(step_size: int, gamma: float = 0.1) -> Schedule:
    """gamma^floor(t/step_size), torch's StepLR."""
    _check_steps(step_size, "step_size")
    _check(isinstance(gamma, (int, float)) and 0.0 < gamma <= 1.0, f"gamma must be in (0, 1], got {gamma!r}")
    return lambda t: gamma ** (t // step_size)


def polynomial(total_steps: int, power: float = 1.0, min_ratio: float = 0.0) -> Schedule:
    """min_ratio + (1 - min_ratio)(1 - t/T)^power, Hugging Face's polynomial decay."""
    _check_steps(total_steps, "total_steps")
    _check_ratio(min_ratio, "min_ratio")
    _check(isinstance(power, (int, float)) and power > 0, f"power must be > 0, got {power!r}")
    return lambda t: min_ratio + (1.0 - min_ratio) * (1.0 - min(t, total_steps) / total_steps) ** power


def cosine_restarts(t_0: int, t_mult: int = 1, min_ratio: float = 0.0) -> Schedule:
    """SGDR (Loshchilov & Hutter 2017): cosine cycles of length T_0, T_0·T_mult, T_0·T_mult², ...; torch's
    CosineAnnealingWarmRestarts with eta_min = min_ratio · lr."""
    _check_steps(t_0, "t_0")
    _check_steps(t_mult, "t_mult")
    _check_ratio(min_ratio, "min_ratio")

    def schedule(t: int) -> float:
        if t_mult == 1:
            t_cur, t_i = t % t_0, t_0
        else:  # cycles grow geometrically, so this loop runs O(log t) times
            start, t_i = 0, t_0
            while t >= start + t_i:
                start, t_i = start + t_i, t_i * t_mult
            t_cur = t - start
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t_cur / t_i))

    return schedule


def wsd(total_steps: int, decay_ratio: float = 0.1, min_ratio: float = 0.0, decay_shape: str = "linear") -> Schedule:
    """Warmup-stable-decay (Hu et al. 2024, MiniCPM): hold 1, then decay over the last ``decay_ratio`` of the
    steps to ``min_ratio`` with a ``linear``, ``cosine`` or ``sqrt`` (1 - sqrt(progress)) shape. The warmup is
    ``get_schedule``'s."""
    _check_steps(total_steps, "total_steps")
    _check_ratio(decay_ratio, "decay_ratio")
    _check_ratio(min_ratio, "min_ratio")
    shapes = {
        "linear": lambda x: 1.0 - x,
        "cosine": lambda x: 0.5 * (1.0 + math.cos(math.pi * x)),
        "sqrt": lambda x: 1.0 - math.sqrt(x),
    }
    _check(decay_shape in shapes, f"decay_shape must be one of {sorted(shapes)}, got {decay_shape!r}")
    shape = shapes[decay_shape]
    decay_steps = round(decay_ratio * total_steps)
    stable_steps = total_steps - decay_steps

    def schedule(t: int) -> float:
        if t < stable_steps or decay_steps == 0:
            return 1.0
        progress = min(t - stable_steps, decay_steps) / decay_steps
        return min_ratio + (1.0 - min_ratio) * shape(progress)

    return schedule


def with_warmup(schedule: Schedule, warmup_steps: int) -> Schedule:
    """(t + 1)/W for the first W steps, then ``schedule`` started afresh at 0."""
    _check(isinstance(warmup_steps, int) and warmup_steps >= 0, f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if warmup_steps == 0:
        return schedule
    return lambda t: (t + 1) / warmup_steps if t < warmup_steps else schedule(t - warmup_steps)


# name -> (builder, takes the post-warmup horizon as its first argument)
_BUILDERS: dict[str, tuple[Callable[..., Schedule], bool]] = {
    "constant": (constant, False),
    "linear": (linear, True),
    "cosine": (cosine, True),
    "exponential": (exponential, False),
    "sqrt": (sqrt, False),
    "inverse_time": (inverse_time, False),
    "step": (step, False),
    "polynomial": (polynomial, True),
    "cosine_restarts": (cosine_restarts, False),
    "wsd": (wsd, True),
}

# Hugging Face ``lr_scheduler_type`` names -> (adamlab name, their kwarg names -> ours)
_HF_ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    "constant_with_warmup": ("constant", {}),
    "cosine_with_min_lr": ("cosine", {"min_lr_rate": "min_ratio"}),
    "cosine_warmup_with_min_lr": ("cosine", {"min_lr_rate": "min_ratio"}),
    "cosine_with_restarts": ("cosine_restarts", {}),
    "inverse_sqrt": ("sqrt", {}),
    "warmup_stable_decay": ("wsd", {}),
}


def available_schedules() -> list[str]:
    return sorted(_BUILDERS)


def _resolve(name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    key = name.strip().lower().replace("-", "_")
    if key in _HF_ALIASES:
        key, renames = _HF_ALIASES[key]
        kwargs = {renames.get(k, k): v for k, v in kwargs.items()}
    if key not in _BUILDERS:
        close = difflib.get_close_matches(key, [*_BUILDERS, *_HF_ALIASES], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown schedule {name!r}.{hint} Valid names: {', '.join(available_schedules())}")
    return key, kwargs


def get_schedule(name: str, total_steps: int, warmup_steps: int | float = 0, **kwargs: Any) -> Schedule:
    """The multiplier of the base learning rate at optimizer step t, for schedule ``name`` over ``total_steps``.

    ``warmup_steps`` is a step count, or a ratio in (0, 1) of ``total_steps``. Extra keyword arguments go to the
    named schedule (``min_ratio``, ``gamma``, ``k``, ``step_size``, ``power``, ``t_0``, ``t_mult``,
    ``decay_ratio``, ``decay_shape``); Hugging Face's ``cosine_with_restarts`` takes ``num_cycles`` (equal cycles
    over the horizon) instead of ``t_0``.
    """
    key, kwargs = _resolve(name, kwargs)
    _check_steps(total_steps, "total_steps")
    if isinstance(warmup_steps, float) and 0.0 < warmup_steps < 1.0:
        warmup_steps = round(warmup_steps * total_steps)
    _check(isinstance(warmup_steps, int) and 0 <= warmup_steps < total_steps,
           f"warmup_steps must be an int in [0, total_steps) or a ratio in (0, 1), got {warmup_steps!r}")
    horizon = total_steps - warmup_steps
    if key == "cosine_restarts" and "num_cycles" in kwargs:
        num_cycles = kwargs.pop("num_cycles")
        _check_steps(num_cycles, "num_cycles")
        kwargs["t_0"] = max(1, horizon // num_cycles)
    builder, takes_horizon = _BUILDERS[key]
    try:
        schedule = builder(horizon, **kwargs) if takes_horizon else builder(**kwargs)
    except TypeError as error:  # an unknown or missing keyword: say which schedule takes which
        raise ValueError(f"schedule {key!r}: {error}") from None
    return with_warmup(schedule, warmup_steps)


def create_scheduler(
    optimizer: Optimizer, name: str, total_steps: int, warmup_steps: int | float = 0, **kwargs: Any
) -> LambdaLR:
    """A torch ``LambdaLR`` following ``get_schedule(name, ...)``; call ``scheduler.step()`` after each
    ``optimizer.step()``. Its state_dict holds the step, so a resumed run continues with the exact lr."""
    return LambdaLR(optimizer, get_schedule(name, total_steps, warmup_steps, **kwargs))
