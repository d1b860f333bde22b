"""Executors: where a study's trials run.

Whatever the executor, the coordinating process (the one running ``adamlab sweep``) claims trials and alone writes
the store; an executor only decides where ``train()`` runs. ``local`` runs trials one after another in this process.
A distributed executor (Ray) sends ``run_trial`` to workers and records the ``TrialOutcome`` each returns.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from ..training import TrainConfig, train
from .store import Owner, Store, TrialOutcome, TrialRow
from .trials import trial_folder


class SweepListener:
    """Progress callbacks of a sweep; this base ignores them."""

    def sweep_started(self, study_dir: Path, counts: dict[str, int]) -> None:
        pass

    def trial_started(self, trial: TrialRow) -> None:
        pass

    def trial_finished(self, trial: TrialRow, outcome: TrialOutcome) -> None:
        pass


class Executor(ABC):
    name: ClassVar[str]

    @abstractmethod
    def run(self, store: Store, listener: SweepListener, show_progress: bool = False) -> bool:
        """Run queued trials until none is left. False when the user stopped the sweep (Ctrl-C): the trial in
        progress is checkpointed and back in the queue, and the next sweep resumes it."""


class LocalExecutor(Executor):
    """One trial at a time, in this process."""

    name = "local"

    def run(self, store: Store, listener: SweepListener, show_progress: bool = False) -> bool:
        owner = Owner.current()
        while (trial := store.claim(owner)) is not None:
            listener.trial_started(trial)
            try:
                with store.heartbeat(trial.key, owner):
                    outcome = run_trial(trial_config(store.study_dir, trial), show_progress)
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, resume from the last checkpoint next time
                store.release(trial.key, owner)
                raise
            if outcome.status == "interrupted":
                store.release(trial.key, owner)
                listener.trial_finished(trial, outcome)
                return False
            store.finish(trial.key, owner, outcome)
            listener.trial_finished(trial, outcome)
        return True


EXECUTORS: dict[str, type[Executor]] = {LocalExecutor.name: LocalExecutor}


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[name]()


def trial_config(study_dir: Path, trial: TrialRow) -> TrainConfig:
    """The trial's config, writing to its folder in the study folder as it is now (the folder may have moved)."""
    config = TrainConfig.from_dict(trial.config)
    config.out = str(trial_folder(study_dir, trial.key))
    return config


def run_trial(config: TrainConfig, show_progress: bool = False) -> TrialOutcome:
    """Train one trial (resuming from its folder's checkpoint if it has one) and read back what it recorded. Any
    exception becomes a ``failed`` outcome carrying the message, so one bad trial never ends a sweep."""
    started = time.perf_counter()
    try:
        result = train(config, show_progress=show_progress)
    except Exception as error:
        steps = _read_jsonl(config.out_dir / "metrics.jsonl")
        return TrialOutcome("failed", len(steps), time.perf_counter() - started, f"{type(error).__name__}: {error}",
                            steps, _read_jsonl(config.out_dir / "evals.jsonl"))
    return TrialOutcome(result.status, result.steps_completed, time.perf_counter() - started, None,
                        _read_jsonl(config.out_dir / "metrics.jsonl"), _read_jsonl(config.out_dir / "evals.jsonl"),
                        result.record.get("environment"))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
