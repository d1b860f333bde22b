"""What a run records, defined once: a step (``metrics.jsonl``, the trackers, the store's ``step_metrics`` rows)
and the run (``result.json``, the store's ``run_records``). Adding a per-step measurement is one field here: the
JSON lines, the tracker scalars and the store's columns follow from the fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepRecord:
    """One optimizer step. ``lr`` is the rate the step used; ``update_norm`` is None when the weights were too many
    to copy; ``memory`` holds the process's RSS or CUDA bytes and GPU utilisation."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    update_norm: float | None
    step_seconds: float
    tokens_per_second: float
    epoch: float  # passes over the training data so far
    memory: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def measurements(cls) -> tuple[str, ...]:
        """The scalar fields, one store column each (the step is the row's key, memory a JSON column)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("step", "memory"))

    def to_dict(self) -> dict[str, Any]:
        """The metrics.jsonl line: the fields, with the memory figures flattened in."""
        return {"step": self.step, **{name: getattr(self, name) for name in self.measurements()}, **self.memory}

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> StepRecord:
        known = {"step", *cls.measurements()}
        return cls(**{name: line.get(name) for name in known},
                   memory={k: v for k, v in line.items() if k not in known})


@dataclass
class RunRecord:
    """A run's result (result.json): how it ended, its final evaluation, and everything needed to read it later
    (configuration, model, optimizer groups, learning-rate resolution, data, cost, environment)."""

    status: str  # done | diverged | interrupted | paused (at stop_at)
    steps_completed: int
    diverged_at_step: int | None
    metrics: dict[str, Any]
    evaluation: dict[str, Any] | None
    config: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    lr: dict[str, Any]
    schedule: dict[str, Any]
    data: dict[str, Any]
    trainable_parameters: int
    tokens_seen: int
    wall_seconds: float
    peak_memory: dict[str, Any]
    processes: int
    environment: dict[str, Any]
    # The utilisation timeline (utilisation.jsonl: telemetry.UtilisationSampler's samples), so a study's store and
    # report have it without the run folder.
    utilisation: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RunRecord:
        """A saved result.json; one written before the learning-rate record existed reads with ``lr`` empty."""
        return cls(**{"lr": {}, **record})
