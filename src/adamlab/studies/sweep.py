"""Run a study: spec -> trials -> store -> executor. Re-running the same study continues where it stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .executors import SweepListener, get_executor
from .spec import StudySpec, load_spec
from .store import Store
from .trials import ESTIMATES_FOLDER, expand_trials

RUNS_FOLDER = Path("studies") / "runs"


@dataclass(frozen=True)
class SweepResult:
    study_dir: Path
    completed: bool  # False: the user stopped it; run the same sweep again to continue
    counts: dict[str, int]  # trials by status


def default_study_dir(spec: StudySpec) -> Path:
    return RUNS_FOLDER / spec.name


def sweep(
    spec_path: str | Path,
    study_dir: str | Path | None = None,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    listener: SweepListener | None = None,
    show_progress: bool = False,
    retry_failed: bool = False,
) -> SweepResult:
    """Validate the whole study, queue the trials the store does not have yet, and run what is queued: finished
    trials are skipped, interrupted ones resume from their checkpoints, failed ones stay failed unless
    ``retry_failed``. ``workers``: trials at once (default: one per visible GPU, or what the Ray cluster holds);
    ``address``: the Ray cluster of the ``ray`` executor (default: one started on this machine)."""
    runner = get_executor(executor, workers=workers, address=address)
    spec = load_spec(spec_path)
    study_dir = Path(study_dir) if study_dir is not None else default_study_dir(spec)
    trials = expand_trials(spec, study_dir, estimates=study_dir / ESTIMATES_FOLDER, show_progress=show_progress)
    store = Store.open(study_dir, create=True)
    try:
        store.register(spec, trials)
        if retry_failed:
            store.requeue_failed()
        listener = listener or SweepListener()
        listener.sweep_started(study_dir, store.counts())
        completed = runner.run(store, listener, show_progress)
        return SweepResult(study_dir, completed, store.counts())
    finally:
        store.close()
