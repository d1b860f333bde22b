"""`adamlab results`: a study's results as CSV, JSON or Parquet, one row per trial."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..studies.results_table import FORMATS, find_study_dir, results_text, write_results
from .app import app
from .options import bad_input_exits_2


@app.command()
def results(
    study: Annotated[str, typer.Argument(help="a study folder, or a study's name (its folder studies/runs/NAME)")],
    format: Annotated[str, typer.Option("--format", "-f", help="csv, json or parquet")] = "csv",
    out: Annotated[Path | None, typer.Option(help="file to write (default: stdout; parquet: STUDY/results.parquet)")]
    = None,
) -> None:
    """One row per trial: its arm, model, task, optimizer, schedule, lr, seed, status, final loss and every score of
    its last evaluation. From Python: adamlab.studies.results_dataframe(STUDY)."""
    with bad_input_exits_2():
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; valid formats: {', '.join(FORMATS)}")
        study_dir = find_study_dir(study)
        if out is None and format != "parquet":
            sys.stdout.write(results_text(study_dir, format))
            return
        written = write_results(study_dir, format, out or study_dir / "results.parquet")
    print(f"wrote {written}", file=sys.stderr)
