"""A study's trials: every seed x model x task x arm x schedule x learning rate, each a validated ``TrainConfig``.

A trial's key is a short hash of ``TrainConfig.identity()``, so it names the run itself, not its place in the spec:
renaming an arm or reordering the spec keeps finished results, and changing anything that changes the run
(a hyperparameter, the data limit, the seed) makes a new trial. Its folder is ``STUDY_DIR/trials/<key>``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..optim.registry import REGISTRY
from ..training import TrainConfig
from ..training.lr_source import (
    OWN,
    LRSource,
    instability_message,
    instability_point,
    lr_method,
    pending_estimate,
    resolve_lr,
)
from .spec import Arm, SpecPath, StudySchedule, StudySpec, StudyTask

KEY_LENGTH = 12  # hex digits: 48 bits, and expand_trials rejects any collision anyway
TRIALS_FOLDER = "trials"
ESTIMATES_FOLDER = "stepsize"  # in the study folder: the lr estimates, one JSON per model x task configuration
PENDING = "pending"  # an estimate not made yet (expand_trials without run_estimates)
STAND_IN_LR = 1e-3  # validates a trial whose learning rate waits for an estimate: the checks need only lr >= 0
_VALIDATION_ERRORS = (ValueError, TypeError, LookupError, OSError, ImportError)


@dataclass(frozen=True)
class Trial:
    key: str | None  # None while its learning rate waits for an estimate (expand_trials(..., run_estimates=False))
    position: int  # in expansion order, which is the order trials run and reports list them
    arm: str
    model: str
    task: str
    optimizer: str
    schedule: str  # the schedule's label, with its arguments
    lr: float | None  # None while it waits for an estimate, or when the optimizer computes its own step size
    seed: int
    config: TrainConfig
    # For an estimated learning rate: the estimate's record with its ``alpha`` (the lr at multiplier 1), its
    # ``source`` (estimated, published, or pending when not made yet) and the ``multiplier``.
    stepsize_estimate: dict[str, Any] | None


def trial_key(config: TrainConfig) -> str:
    identity = json.dumps(config.identity(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()[:KEY_LENGTH]


def trial_folder(study_dir: Path, key: str) -> Path:
    return Path(study_dir) / TRIALS_FOLDER / key


def expand_trials(spec: StudySpec, study_dir: str | Path, estimates: Path | None = None, *,
                  run_estimates: bool = True, show_progress: bool = False) -> list[Trial]:
    """Every trial of ``spec``, in a fixed order, each config validated; a ``SpecError`` at the responsible line
    otherwise. Seeds are the outer loop, so a sweep cut short has compared every configuration on its first seeds.
    ``estimates``: a folder keeping each learning-rate estimate, so a resumed sweep finds the same trials without
    estimating again. ``run_estimates=False`` loads no model: a trial whose estimate is not there yet is validated
    with a stand-in learning rate and comes back with ``key`` and ``lr`` None and its estimate ``pending``.
    """
    study_dir = Path(study_dir)
    learning_rates = _LearningRates(spec, estimates, run_estimates, show_progress)
    trials: list[Trial] = []
    arm_of_key: dict[str, str] = {}
    for seed, model_index, task, arm in itertools.product(spec.seeds, range(len(spec.models)), spec.tasks, spec.arms):
        model = spec.models[model_index]
        for schedule in arm.schedules:
            for lr, estimate in learning_rates(arm, model, task):
                pending = estimate is not None and estimate["source"] == PENDING
                config, origins = _config(spec, seed, model_index, task, arm, schedule,
                                          STAND_IN_LR * estimate["multiplier"] if pending else lr)
                _validate(spec, config, origins, arm)
                key = None if pending else trial_key(config)
                if key is not None and key in arm_of_key:
                    raise spec.error(arm.path, f"arm {arm.name!r} repeats a trial of arm {arm_of_key[key]!r}: the "
                                               "same optimizer, hyperparameters, schedule and learning rate")
                if key is not None:
                    arm_of_key[key] = arm.name
                    config.out = str(trial_folder(study_dir, key))
                trials.append(Trial(key, len(trials), arm.name, model, task.name, arm.optimizer, schedule.label, lr,
                                    seed, config, estimate))
    return trials


def _config(spec: StudySpec, seed: int, model_index: int, task: StudyTask, arm: Arm, schedule: StudySchedule,
            lr: float | None) -> tuple[TrainConfig, dict[str, SpecPath]]:
    """A trial's TrainConfig (its folder still unset), and for each field the spec path that set it."""
    settings = {**spec.settings, **task.settings}
    origins = {**spec.origins, **task.origins, "model": ("models", model_index), "optimizer": (*arm.path, "optimizer"),
               "optimizer_args": (*arm.path, "hparams"), "lr": arm.lr_path, "schedule": schedule.path,
               "schedule_args": schedule.path, "seed": ("seeds",)}
    origins["total_steps"] = origins.get("steps", ("steps",))  # the schedule's own checks call the steps so
    if schedule.warmup_steps is not None:
        settings["warmup_steps"] = schedule.warmup_steps
        origins["warmup_steps"] = schedule.path
    config = TrainConfig(model=spec.models[model_index], task=task.name, task_args=task.options,
                         optimizer=_trained_optimizer(arm.optimizer), lr=lr, optimizer_args=arm.hparams, schedule=schedule.name,
                         schedule_args=schedule.args, seed=seed, **settings)
    return config, origins


def _validate(spec: StudySpec, config: TrainConfig, origins: dict[str, SpecPath], arm: Arm) -> None:
    """``config.validate()``, its error placed at the line that set the field it names (the arm's otherwise)."""
    try:
        config.validate()
    except _VALIDATION_ERRORS as error:
        message = str(error)
        named = [(match.start(), name) for name in origins
                 if (match := re.search(rf"\b{re.escape(name)}\b", message))]
        path = origins[min(named)[1]] if named else arm.path
        raise spec.error(path, f"{config.model} / {config.task} / arm {arm.name!r}: {message}") from None


def _trained_optimizer(name: str) -> str:
    """The optimizer a trial trains with: a name that implies its learning-rate source (adam_dds) trains as the
    plain optimizer it names (adam), at the learning rate the study resolved from that source, so the study's one
    estimate per model and task serves it and the trial is the same run as an ``adam`` arm at that rate."""
    entry = REGISTRY.get(name)
    if entry is None or entry.lr_source is None:
        return name
    return next(plain for plain, other in REGISTRY.items()
                if other.target is entry.target and other.fixed == entry.fixed and other.lr_source is None)


class _LearningRates:
    """An arm's learning rates for one model and task: its fixed values, or multiples of an estimated learning
    rate, where the estimate is the study's published value (dds.alpha) or made once per model, task (and, for
    methods that depend on it, optimizer) by ``training.lr_source.resolve_lr``."""

    def __init__(self, spec: StudySpec, saved: Path | None, run_estimates: bool, show_progress: bool):
        self.spec, self.saved, self.run_estimates, self.show_progress = spec, saved, run_estimates, show_progress
        self.estimates: dict[str, dict[str, Any]] = {}

    def __call__(self, arm: Arm, model: str, task: StudyTask) -> list[tuple[float | None, dict[str, Any] | None]]:
        if arm.lr.kind == OWN:
            return [(None, None)]
        sources = arm.lr.sources
        if not sources[0].estimated:
            return [(source.value, None) for source in sources]
        estimate = self._estimate(arm, model, task, sources[0].method)
        if estimate["source"] == PENDING:
            return [(None, {**estimate, "multiplier": source.multiplier}) for source in sources]
        learning_rates = []
        for source in sources:
            lr = source.multiplier * estimate["alpha"]
            # The study record flags a multiple above where training was measured to become unstable.
            warning = instability_message(lr, str(source), estimate.get("unstable_above"),
                                          estimate.get("unstable_by", ""), _trained_optimizer(arm.optimizer))
            learning_rates.append((lr, {**estimate, "multiplier": source.multiplier,
                                        **({"lr_warning": warning} if warning else {})}))
        return learning_rates

    def _estimate(self, arm: Arm, model: str, task: StudyTask, method: str) -> dict[str, Any]:
        published = self.spec.dds_alpha.get(model, {}).get(task.name) if method == "dds" else None
        if published is not None:
            return {"source": "published", "alpha": published}
        config = estimation_config(self.spec, arm, model, task, method)
        key = trial_key(config)
        if key not in self.estimates:
            cache = None if self.saved is None else self.saved / lr_method(method).study_file(key)
            if not self.run_estimates and pending_estimate(LRSource(method), cache):
                self.estimates[key] = {"source": PENDING, "lr_method": method}
            else:
                _, resolution = resolve_lr(config, LRSource(method), cache=cache, show_progress=self.show_progress)
                extra = {} if method == "dds" else {"lr_method": method, "alpha": resolution.estimate}
                limit, by = self._instability_point(resolution.record, arm, model, task, method)
                self.estimates[key] = {"source": "estimated", **resolution.record, **extra, "unstable_above": limit,
                                       "unstable_by": by}
        return self.estimates[key]


    def _instability_point(self, record: dict[str, Any], arm: Arm, model: str, task: StudyTask,
                           method: str) -> tuple[float | None, str]:
        """Where the estimate saw training become unstable; the AdamDDS family sees no instability itself, so
        the AEoS bound of the arm's optimizer is measured (once, cached with the study's estimates)."""
        limit, by = instability_point(record)
        if limit is None and method.startswith("dds"):
            config = estimation_config(self.spec, arm, model, task, "aeos")
            cache = None if self.saved is None else self.saved / lr_method("aeos").study_file(trial_key(config))
            if not self.run_estimates and pending_estimate(LRSource("aeos"), cache):
                return None, ""  # validation loads no model: the check waits for the sweep
            _, bound = resolve_lr(config, LRSource("aeos"), cache=cache, show_progress=self.show_progress)
            limit, by = instability_point(bound.record)
        return limit, by


def estimation_config(spec: StudySpec, arm: Arm, model: str, task: StudyTask, method: str) -> TrainConfig:
    """The planned run an arm's learning rate is estimated for: the study's model, task, data, LoRA, batch size,
    steps (the horizon) and first seed; methods other than dds also depend on the arm's optimizer."""
    optimizer = {} if method == "dds" else {"optimizer": _trained_optimizer(arm.optimizer),
                                            "optimizer_args": arm.hparams}
    return TrainConfig(model=model, task=task.name, task_args=task.options, seed=spec.seeds[0], **optimizer,
                       **{**spec.settings, **task.settings})
