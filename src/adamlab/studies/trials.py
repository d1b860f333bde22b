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

from ..training import TrainConfig, estimate_for_config
from .spec import Arm, SpecPath, StudySchedule, StudySpec, StudyTask

KEY_LENGTH = 12  # hex digits: 48 bits, and expand_trials rejects any collision anyway
TRIALS_FOLDER = "trials"
ESTIMATES_FOLDER = "stepsize"  # in the study folder: the dds estimates, one JSON per model x task configuration
_VALIDATION_ERRORS = (ValueError, TypeError, LookupError, OSError, ImportError)


@dataclass(frozen=True)
class Trial:
    key: str
    position: int  # in expansion order, which is the order trials run and reports list them
    arm: str
    model: str
    task: str
    optimizer: str
    schedule: str  # the schedule's label, with its arguments
    lr: float
    seed: int
    config: TrainConfig
    stepsize_estimate: dict[str, Any] | None  # for a dds learning rate: α, where it came from, the multiplier


def trial_key(config: TrainConfig) -> str:
    identity = json.dumps(config.identity(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()[:KEY_LENGTH]


def trial_folder(study_dir: Path, key: str) -> Path:
    return Path(study_dir) / TRIALS_FOLDER / key


def expand_trials(spec: StudySpec, study_dir: str | Path, estimates: Path | None = None) -> list[Trial]:
    """Every trial of ``spec``, in a fixed order, each config validated; a ``SpecError`` at the responsible line
    otherwise. Seeds are the outer loop, so a sweep cut short has compared every configuration on its first seeds.
    ``estimates``: a folder keeping each dds step-size estimate, so a resumed sweep finds the same trials without
    estimating again.
    """
    study_dir = Path(study_dir)
    learning_rates = _LearningRates(spec, estimates)
    trials: list[Trial] = []
    arm_of_key: dict[str, str] = {}
    for seed, model_index, task, arm in itertools.product(spec.seeds, range(len(spec.models)), spec.tasks, spec.arms):
        model = spec.models[model_index]
        for schedule in arm.schedules:
            for lr, estimate in learning_rates(arm, model, task):
                config, origins = _config(spec, seed, model_index, task, arm, schedule, lr)
                _validate(spec, config, origins, arm)
                key = trial_key(config)
                if key in arm_of_key:
                    raise spec.error(arm.path, f"arm {arm.name!r} repeats a trial of arm {arm_of_key[key]!r}: the "
                                               "same optimizer, hyperparameters, schedule and learning rate")
                arm_of_key[key] = arm.name
                config.out = str(trial_folder(study_dir, key))
                trials.append(Trial(key, len(trials), arm.name, model, task.name, arm.optimizer, schedule.label, lr,
                                    seed, config, estimate))
    return trials


def _config(spec: StudySpec, seed: int, model_index: int, task: StudyTask, arm: Arm, schedule: StudySchedule,
            lr: float) -> tuple[TrainConfig, dict[str, SpecPath]]:
    """A trial's TrainConfig (its folder still unset), and for each field the spec path that set it."""
    settings = {**spec.settings, **task.settings}
    origins = {**spec.origins, **task.origins, "model": ("models", model_index), "optimizer": (*arm.path, "optimizer"),
               "optimizer_args": (*arm.path, "hparams"), "lr": arm.lr_path, "schedule": schedule.path,
               "schedule_args": schedule.path, "seed": ("seeds",)}
    origins["total_steps"] = origins.get("steps", ("steps",))  # the schedule's own checks call the steps so
    if schedule.warmup_steps is not None:
        settings["warmup_steps"] = schedule.warmup_steps
        origins["warmup_steps"] = schedule.path
    config = TrainConfig(model=spec.models[model_index], task=task.name, out="", task_args=task.options,
                         optimizer=arm.optimizer, lr=lr, optimizer_args=arm.hparams, schedule=schedule.name,
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


class _LearningRates:
    """An arm's learning rates for one model and task: its fixed values, or its dds multiples of α, where α is the
    study's published value (dds.alpha) or an estimate made once per model and task."""

    def __init__(self, spec: StudySpec, saved: Path | None):
        self.spec, self.saved = spec, saved
        self.estimates: dict[tuple[str, str], dict[str, Any]] = {}

    def __call__(self, arm: Arm, model: str, task: StudyTask) -> list[tuple[float, dict[str, Any] | None]]:
        if arm.lr.kind == "fixed":
            return [(lr, None) for lr in arm.lr.values]
        estimate = self.estimates.get((model, task.name))
        if estimate is None:
            published = self.spec.dds_alpha.get(model, {}).get(task.name)
            if published is not None:
                estimate = {"source": "published", "alpha": published}
            else:
                estimate = {"source": "estimated", **estimate_dds_alpha(model, task, self.spec, self.saved)}
            self.estimates[(model, task.name)] = estimate
        return [(multiplier * estimate["alpha"], {**estimate, "multiplier": multiplier})
                for multiplier in arm.lr.multipliers]


def estimate_dds_alpha(model: str, task: StudyTask, spec: StudySpec, saved: Path | None = None) -> dict[str, Any]:
    """The data-dependent step size α for ``model`` on ``task``: ``estimate_for_config``'s record (adamdds.md §7.4)
    with its ``alpha``, for a TrainConfig holding the model, task, data, LoRA, batch size and steps of the study (the
    horizon) and its first seed. With ``saved``, the record is kept there under the config's key and read back while
    the config is unchanged."""
    config = TrainConfig(model=model, task=task.name, out="", task_args=task.options, seed=spec.seeds[0],
                         **{**spec.settings, **task.settings})
    path = None if saved is None else saved / f"{trial_key(config)}.json"
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    estimate = estimate_for_config(config).to_dict()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(estimate, indent=2))
        temporary.replace(path)  # atomic: a second coordinator reads a whole record or none
    return estimate
