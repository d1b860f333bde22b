"""Study reports, made from the study's results store only (never from run folders or the spec file).

``write_report(study_dir)`` writes ``STUDY_DIR/report/``:

* ``report.md``: the tuning budget; per model x task every configuration's metrics as mean ± std over seeds; per
  task the same numbers in the published layout (a row per metric x model, a column per configuration);
* ``tables/``: both layouts as LaTeX and CSV (``<model>__<task>.tex|csv``, ``<task>.published.tex|csv``);
* ``summary.json``: the same numbers as data, each trial's own scores included;
* ``report.html``: the tables with interactive plots, one self-contained file that works offline;
* ``figures/``: ``loss_<model>__<task>.png`` and ``metrics_...png`` for papers;
* ``benchmark/`` and ``algoperf/``: per fine-tuned model the published study's result JSON, and per trial
  AlgoPerf's folder (``exports``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..studies.store import Store
from .exports import slug, write_exports
from .figures import loss_figure, metrics_figure, save_png
from .html import html_report
from .render import (
    csv_table,
    latex_table,
    markdown_report,
    markdown_table,
    published_csv,
    published_latex,
    rich_table,
)
from .results import ConfigurationResult, ResultTable, StudyResults, collect, published_tables, summary

REPORT_FOLDER = "report"

__all__ = ["ConfigurationResult", "Report", "ResultTable", "StudyResults", "collect", "csv_table", "html_report",
           "latex_table", "loss_figure", "markdown_report", "markdown_table", "metrics_figure", "rich_table", "summary",
           "write_report"]


@dataclass(frozen=True)
class Report:
    folder: Path
    markdown: Path
    summary: Path
    tables: list[Path]  # .tex and .csv per model x task, and per task in the published layout
    html: Path
    figures: list[Path]  # loss and metrics PNGs per model x task
    exports: list[Path]  # benchmark JSONs and AlgoPerf trial folders
    results: StudyResults


def write_report(study_dir: str | Path) -> Report:
    folder = Path(study_dir) / REPORT_FOLDER
    store = Store.open(study_dir, read_only=True)  # a report never changes the results
    try:
        try:
            for subfolder in ("tables", "figures"):
                (folder / subfolder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot write the report into {folder}: {error.strerror}") from None
        results = collect(store)
        curves = {trial.key: store.step_metrics(trial.key) for trial in store.trials()}
        timelines = {trial.key: (store.run_record(trial.key) or {}).get("utilisation") or []
                     for trial in store.trials()}
        exports = write_exports(store, folder, curves)
    finally:
        store.close()
    tables, figures = [], []
    for table in results.tables:
        stem = slug(f"{table.model}__{table.task}")
        for suffix, text in ((".tex", latex_table(table)), (".csv", csv_table(table))):
            path = folder / "tables" / f"{stem}{suffix}"
            path.write_text(text, encoding="utf-8")
            tables.append(path)
        figures.append(save_png(loss_figure(table, curves), folder / "figures" / f"loss_{stem}.png"))
        figures.append(save_png(metrics_figure(table), folder / "figures" / f"metrics_{stem}.png"))
    for table in published_tables(results):
        for suffix, text in ((".published.tex", published_latex(table)), (".published.csv", published_csv(table))):
            path = folder / "tables" / f"{slug(table.task)}{suffix}"
            path.write_text(text, encoding="utf-8")
            tables.append(path)
    markdown = folder / "report.md"
    markdown.write_text(markdown_report(results), encoding="utf-8")
    summary_file = folder / "summary.json"
    summary_file.write_text(json.dumps(summary(results), indent=2), encoding="utf-8")
    page = folder / "report.html"
    page.write_text(html_report(results, curves, timelines), encoding="utf-8")
    return Report(folder, markdown, summary_file, tables, page, figures, exports, results)
