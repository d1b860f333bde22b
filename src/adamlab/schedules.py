"""Learning-rate schedules as plain functions of the optimizer step.

A schedule maps the step t (t = 0 is the first optimizer step) to a multiplier of the base learning rate.
Every schedule is closed-form in t, so a resumed run gets exactly the learning rate of an uninterrupted one:
``create_scheduler`` wraps it in a ``torch.optim.lr_scheduler.LambdaLR`` whose state is just the step.

The pieces compose like optax's: ``cosine(T)`` is a schedule, ``with_warmup(cosine(T - W), W)`` another.
``get_schedule(name, total_steps, warmup_steps, **kw)`` builds one by name, with warmup taking the first W
steps, (t + 1) / W, and the named schedule running on the remaining T - W steps. Past its horizon a schedule
holds its final value. Hugging Face ``lr_scheduler_type`` names adamlab has no form of its own for
(``inverse_sqrt``, ``warmup_stable_decay``, ``cosine_with_min_lr``, ...) compute exactly what transformers does,
warmup included, and take transformers' argument names.
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
    "hf_constant_with_warmup",
    "hf_cosine_with_restarts",
    "hf_inverse_sqrt",
    "hf_cosine_with_min_lr",
    "hf_cosine_warmup_with_min_lr",
    "hf_warmup_stable_decay",
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

# Hugging Face ``lr_scheduler_type`` names that adamlab has no closed form of its own for. Each computes exactly what
# ``transformers.get_scheduler(name, optimizer, num_warmup_steps=W, num_training_steps=T, scheduler_specific_kwargs=kw)``
# does (tests/test_schedules.py compares them over a grid), and takes the same keyword arguments. Their warmup is
# transformers' t/W (the first step has lr 0), not adamlab's (t + 1)/W. They are written out here, not borrowed from
# transformers, because transformers only builds them as LambdaLR objects bound to an optimizer, while adamlab's
# schedules are plain functions of the step that import without transformers.
#
# ``linear``, ``cosine``, ``constant`` and ``polynomial`` are both Hugging Face names and adamlab's own closed forms;
# they keep adamlab's meaning: their warmup is (t + 1)/W, and polynomial ends at ``min_ratio``, not an absolute lr_end.


def _hf_warmup(t: int, warmup_steps: int) -> float:
    return t / max(1, warmup_steps)


def _min_lr_rate(min_lr: float | None, min_lr_rate: float | None, base_lr: float | None) -> float:
    """Hugging Face's cosine_with_min_lr takes the floor as an absolute ``min_lr`` or as ``min_lr_rate`` of the lr."""
    _check(min_lr is None or min_lr_rate is None, "pass only one of min_lr or min_lr_rate")
    _check(min_lr is not None or min_lr_rate is not None, "cosine_with_min_lr needs min_lr or min_lr_rate")
    if min_lr is not None:
        _check(base_lr is not None and base_lr > 0,
               "min_lr is an absolute learning rate: pass base_lr (create_scheduler does), or use min_lr_rate")
        return min_lr / base_lr
    return min_lr_rate


def hf_constant_with_warmup(total_steps: int, warmup_steps: int) -> Schedule:
    return lambda t: _hf_warmup(t, warmup_steps) if t < warmup_steps else 1.0


def hf_cosine_with_restarts(total_steps: int, warmup_steps: int, num_cycles: int = 1) -> Schedule:
    """Hard restarts: ``num_cycles`` equal cosine cycles from 1 to 0 after warmup, then 0."""
    def schedule(t: int) -> float:
        if t < warmup_steps:
            return _hf_warmup(t, warmup_steps)
        progress = (t - warmup_steps) / max(1, total_steps - warmup_steps)
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))

    return schedule


def hf_inverse_sqrt(total_steps: int, warmup_steps: int, timescale: int | None = None) -> Schedule:
    """1/sqrt((t + timescale - W)/timescale) after warmup; ``timescale`` defaults to W, or 10 000 without warmup."""
    if timescale is None:
        timescale = warmup_steps or 10_000
    _check_steps(timescale, "timescale")
    shift = timescale - warmup_steps
    return lambda t: _hf_warmup(t, warmup_steps) if t < warmup_steps else 1.0 / math.sqrt((t + shift) / timescale)


def hf_cosine_with_min_lr(
    total_steps: int, warmup_steps: int, num_cycles: float = 0.5, min_lr: float | None = None,
    min_lr_rate: float | None = None, base_lr: float | None = None,
) -> Schedule:
    """A cosine from 1 down to ``min_lr_rate`` (or ``min_lr`` / base lr) after warmup."""
    floor = _min_lr_rate(min_lr, min_lr_rate, base_lr)

    def schedule(t: int) -> float:
        if t < warmup_steps:
            return _hf_warmup(t, warmup_steps)
        progress = (t - warmup_steps) / max(1, total_steps - warmup_steps)
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        return max(0.0, factor * (1 - floor) + floor)

    return schedule


def hf_cosine_warmup_with_min_lr(
    total_steps: int, warmup_steps: int, num_cycles: float = 0.5, min_lr: float | None = None,
    min_lr_rate: float | None = None, warmup_lr_rate: float | None = None, base_lr: float | None = None,
) -> Schedule:
    """As ``cosine_with_min_lr``, but the warmup starts at (t + 1)/W (or at ``warmup_lr_rate``) and the cosine
    is one step ahead, so the last step reaches the floor."""
    floor = _min_lr_rate(min_lr, min_lr_rate, base_lr)

    def schedule(t: int) -> float:
        if t < warmup_steps:
            if warmup_lr_rate is None:
                return (t + 1.0) / max(1.0, float(warmup_steps))
            return warmup_lr_rate + (1.0 - warmup_lr_rate) * t / max(1, warmup_steps - 1)
        progress = (t - warmup_steps + 1.0) / max(1.0, float(total_steps - warmup_steps))
        factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
        return max(0.0, factor * (1 - floor) + floor)

    return schedule


_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def hf_warmup_stable_decay(
    total_steps: int, warmup_steps: int, num_decay_steps: int | None = None, num_stable_steps: int | None = None,
    warmup_type: str = "linear", decay_type: str = "cosine", min_lr_ratio: float = 0.0, num_cycles: float = 0.5,
) -> Schedule:
    """Warmup from ``min_lr_ratio`` to 1, hold, decay over ``num_decay_steps`` back to ``min_lr_ratio``; the stable
    phase is ``num_stable_steps``, or whatever the total leaves."""
    _check(num_decay_steps is not None, "warmup_stable_decay needs num_decay_steps (Hugging Face's argument)")
    _check(isinstance(num_decay_steps, int) and num_decay_steps >= 0,
           f"num_decay_steps must be an int >= 0, got {num_decay_steps!r}")
    _check(warmup_type in _WSD_SHAPES, f"warmup_type must be one of {list(_WSD_SHAPES)}, got {warmup_type!r}")
    _check(decay_type in _WSD_SHAPES, f"decay_type must be one of {list(_WSD_SHAPES)}, got {decay_type!r}")
    if num_stable_steps is None:
        num_stable_steps = total_steps - warmup_steps - num_decay_steps
    _check(num_stable_steps >= 0, f"warmup_steps + num_decay_steps exceed total_steps ({total_steps})")
    shapes = {
        "warmup": {"linear": lambda p: p, "cosine": lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
                   "1-sqrt": lambda p: 1.0 - math.sqrt(1.0 - p)},
        "decay": {"linear": lambda p: 1.0 - p, "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * p)),
                  "1-sqrt": lambda p: 1.0 - math.sqrt(p)},
    }
    rise, fall = shapes["warmup"][warmup_type], shapes["decay"][decay_type]

    def schedule(t: int) -> float:
        if t < warmup_steps:
            return max(0.0, rise(t / max(1, warmup_steps)) * (1.0 - min_lr_ratio) + min_lr_ratio)
        if t < warmup_steps + num_stable_steps:
            return 1.0
        if t < warmup_steps + num_stable_steps + num_decay_steps:
            progress = (t - warmup_steps - num_stable_steps) / max(1, num_decay_steps)
            return max(0.0, fall(progress) * (1.0 - min_lr_ratio) + min_lr_ratio)
        return min_lr_ratio

    return schedule


# name -> builder(total_steps, warmup_steps, **transformers' keyword arguments); the warmup is part of each.
_HF_BUILDERS: dict[str, Callable[..., Schedule]] = {
    "constant_with_warmup": hf_constant_with_warmup,
    "cosine_with_restarts": hf_cosine_with_restarts,
    "inverse_sqrt": hf_inverse_sqrt,
    "cosine_with_min_lr": hf_cosine_with_min_lr,
    "cosine_warmup_with_min_lr": hf_cosine_warmup_with_min_lr,
    "warmup_stable_decay": hf_warmup_stable_decay,
}
# transformers' schedulers that follow the loss rather than the step: no closed form exists.
_NOT_CLOSED_FORM = ("reduce_lr_on_plateau", "greedy")
_BASE_LR_USERS = ("cosine_with_min_lr", "cosine_warmup_with_min_lr")


def available_schedules() -> list[str]:
    """adamlab's closed forms and the Hugging Face names computed as transformers does."""
    return sorted([*_BUILDERS, *_HF_BUILDERS])


def _key(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key in _NOT_CLOSED_FORM:
        raise ValueError(f"schedule {name!r} follows the loss, not the step, so it has no closed form; "
                         f"valid names: {', '.join(available_schedules())}")
    if key not in _BUILDERS and key not in _HF_BUILDERS:
        close = difflib.get_close_matches(key, available_schedules(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown schedule {name!r}.{hint} Valid names: {', '.join(available_schedules())}")
    return key


def get_schedule(
    name: str, total_steps: int, warmup_steps: int | float = 0, base_lr: float | None = None, **kwargs: Any
) -> Schedule:
    """The multiplier of the base learning rate at optimizer step t, for schedule ``name`` over ``total_steps``.

    ``warmup_steps`` is a step count, or a ratio in (0, 1) of ``total_steps``. Extra keyword arguments go to the
    named schedule: adamlab's (``min_ratio``, ``gamma``, ``k``, ``step_size``, ``power``, ``t_0``, ``t_mult``,
    ``decay_ratio``, ``decay_shape``), or for a Hugging Face name, transformers' own (``num_cycles``,
    ``timescale``, ``min_lr``, ``min_lr_rate``, ``warmup_lr_rate``, ``num_decay_steps``, ``num_stable_steps``,
    ``warmup_type``, ``decay_type``, ``min_lr_ratio``). ``base_lr`` turns an absolute ``min_lr`` into a ratio.
    """
    key = _key(name)
    _check_steps(total_steps, "total_steps")
    if isinstance(warmup_steps, float) and 0.0 < warmup_steps < 1.0:
        warmup_steps = round(warmup_steps * total_steps)
    _check(isinstance(warmup_steps, int) and 0 <= warmup_steps < total_steps,
           f"warmup_steps must be an int in [0, total_steps) or a ratio in (0, 1), got {warmup_steps!r}")
    if key in _HF_BUILDERS:
        if key in _BASE_LR_USERS:
            kwargs["base_lr"] = base_lr
        builder: Callable[..., Schedule] = _HF_BUILDERS[key]
        arguments: tuple[Any, ...] = (total_steps, warmup_steps)
    else:
        builder, takes_horizon = _BUILDERS[key]
        arguments = (total_steps - warmup_steps,) if takes_horizon else ()
    try:
        schedule = builder(*arguments, **kwargs)
    except TypeError as error:  # an unknown or missing keyword: say which schedule takes which
        raise ValueError(f"schedule {key!r}: {error}") from None
    return schedule if key in _HF_BUILDERS else with_warmup(schedule, warmup_steps)


def create_scheduler(
    optimizer: Optimizer, name: str, total_steps: int, warmup_steps: int | float = 0, **kwargs: Any
) -> LambdaLR:
    """A torch ``LambdaLR`` following ``get_schedule(name, ...)``; call ``scheduler.step()`` after each
    ``optimizer.step()``. Its state_dict holds the step, so a resumed run continues with the exact lr."""
    return LambdaLR(optimizer, get_schedule(name, total_steps, warmup_steps, base_lr=getattr(optimizer, "defaults", {}).get("lr"),
                                            **kwargs))
