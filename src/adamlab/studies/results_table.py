"""A study's results as one flat record per trial, for the tools users already have: CSV, JSON, Parquet, pandas.

Read from the results store alone, like the reports. Each record holds the trial's identity (key, arm, model, task,
optimizer, schedule, lr, seed), how it ran (status, attempts, steps, wall seconds, final training loss) and every
score of its last evaluation under the task's own metric names (``accuracy``, ``f1``, ``n_invalid``, ...).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..atomic import write_bytes, write_text
from ..extras import require
from .store import Store
from .sweep import RUNS_FOLDER

IDENTITY = ("key", "arm", "model", "task", "optimizer", "schedule", "lr", "seed")
RUN = ("status", "attempts", "steps_completed", "wall_seconds", "final_loss")
FORMATS = ("csv", "json", "parquet")

__all__ = ["FORMATS", "find_study_dir", "results_dataframe", "results_text", "trial_records", "write_results"]


def find_study_dir(study: str | Path) -> Path:
    """A study folder, or a study's name for its default folder (``demo`` -> studies/runs/demo)."""
    path = Path(study)
    if path.is_dir():
        return path
    if path.parent == Path(".") and (RUNS_FOLDER / path.name).is_dir():
        return RUNS_FOLDER / path.name
    raise FileNotFoundError(f"no study folder at {study} (nor at {RUNS_FOLDER / path.name}); run `adamlab sweep` first")


def trial_records(study: str | Path) -> list[dict[str, Any]]:
    """One flat record per trial, in the study's order; metric columns are the union over tasks (absent: None)."""
    store = Store.open(find_study_dir(study))
    try:
        trials, finals, losses = store.trials(), store.final_evaluations(), store.final_losses()
    finally:
        store.close()
    metrics = sorted({name for scores in finals.values() for name in scores})
    records = []
    for trial in trials:
        record = {name: getattr(trial, name) for name in IDENTITY + RUN[:-1]}
        record["final_loss"] = losses.get(trial.key)
        scores = finals.get(trial.key, {})
        records.append({**record, **{name: scores.get(name) for name in metrics}})
    return records


def results_dataframe(study: str | Path):
    """``trial_records`` as a pandas DataFrame, one row per trial (needs the ``results`` extra)."""
    require("pandas", "results", "a results DataFrame")
    import pandas  # optional (the results extra), so imported only here

    return pandas.DataFrame.from_records(trial_records(study))


def results_text(study: str | Path, fmt: str) -> str:
    """The records as CSV (a header, then a row per trial) or JSON (a list of objects)."""
    records = trial_records(study)
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else list(IDENTITY + RUN),
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    raise ValueError(f"unknown text format {fmt!r}; valid: csv, json")


def write_results(study: str | Path, fmt: str, out: str | Path) -> Path:
    """Write the records to ``out`` in ``fmt`` (csv, json or parquet), atomically: a reader never sees half a file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "parquet":
        require("pyarrow", "results", "writing Parquet")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        buffer = io.BytesIO()
        results_dataframe(study).to_parquet(buffer, index=False)
        write_bytes(out, buffer.getvalue())
    else:
        write_text(out, results_text(study, fmt))
    return out
