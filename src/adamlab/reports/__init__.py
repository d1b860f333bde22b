"""Study reports, made from the study's results store only (never from run folders or the spec file).

``write_report(study_dir)`` writes ``STUDY_DIR/report/``: ``report.md`` (the tuning budget and, per model x task,
every configuration's metrics as mean ± std over seeds), ``tables/<model>__<task>.tex`` and ``.csv``, and
``summary.json`` (the same numbers as data, each trial's own scores included).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..studies.store import Store
from .render import csv_table, latex_table, markdown_report, markdown_table, rich_table
from .results import ConfigurationResult, ResultTable, StudyResults, collect, summary

REPORT_FOLDER = "report"

__all__ = ["ConfigurationResult", "Report", "ResultTable", "StudyResults", "collect", "csv_table", "latex_table",
           "markdown_report", "markdown_table", "rich_table", "summary", "write_report"]


@dataclass(frozen=True)
class Report:
    folder: Path
    markdown: Path
    summary: Path
    tables: list[Path]  # .tex and .csv per model x task
    results: StudyResults


def write_report(study_dir: str | Path) -> Report:
    store = Store.open(study_dir)
    try:
        results = collect(store)
    finally:
        store.close()
    folder = Path(study_dir) / REPORT_FOLDER
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    tables = []
    for table in results.tables:
        stem = _slug(f"{table.model}__{table.task}")
        for suffix, text in ((".tex", latex_table(table)), (".csv", csv_table(table))):
            path = folder / "tables" / f"{stem}{suffix}"
            path.write_text(text, encoding="utf-8")
            tables.append(path)
    markdown = folder / "report.md"
    markdown.write_text(markdown_report(results), encoding="utf-8")
    summary_file = folder / "summary.json"
    summary_file.write_text(json.dumps(summary(results), indent=2), encoding="utf-8")
    return Report(folder, markdown, summary_file, tables, results)


def _slug(text: str) -> str:
    """A file name for a model id such as ``meta-llama/Llama-3.2-3B-Instruct``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
