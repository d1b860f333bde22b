"""The report tables as Markdown, LaTeX, CSV and a rich table: the same cells, best bold and second underlined."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

from rich.table import Table

from .results import (
    COUNT_METRICS,
    ConfigurationResult,
    LayoutRow,
    PublishedTable,
    ResultTable,
    StudyResults,
    published_tables,
)

HEADERS = ("arm", "optimizer", "schedule", "lr", "seeds")
# How each format marks the best and the second-best mean.
MARKDOWN_MARKS = {"best": "**{}**", "second": "<u>{}</u>", None: "{}"}
LATEX_MARKS = {"best": "\\textbf{{{}}}", "second": "\\underline{{{}}}", None: "{}"}
MISSING = "–"
# Markdown passes raw HTML through, and its renderers differ in what they sanitise: every piece of text that comes
# from a spec or a store (names, descriptions, budgets, environments) has HTML and the Markdown syntax that could
# build a link, code span or emphasis escaped, and table pipes escaped. "_" stays: CommonMark ignores it inside
# words, and it is common in names.
MARKDOWN_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "|": "\\|", "[": "\\[", "]": "\\]",
                    "`": "\\`", "*": "\\*", "!": "\\!"}


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: no HTML, link, image, code span or emphasis can come out of it."""
    return "".join(MARKDOWN_ESCAPES.get(char, char) for char in str(text))


def metric_cell(row: ConfigurationResult, metric: str) -> str:
    mean = row.mean(metric)
    if mean is None:
        return MISSING
    if metric in COUNT_METRICS:  # an example count: its mean over seeds, which is whole unless seeds disagree
        return f"{mean:g}"
    std = row.std(metric)
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def seeds_cell(row: ConfigurationResult) -> str:
    """Done seeds over all seeds, naming the others: "1/2 (1 diverged)"."""
    others = ", ".join(f"{n} {status}" for status, n in row.statuses.items() if status != "done")
    return f"{row.seeds_done}/{len(row.trials)}" + (f" ({others})" if others else "")


def table_cells(table: ResultTable, index: int) -> list[tuple[str, str | None]]:
    """(text, mark) per column of row ``index``; mark is "best", "second" or None."""
    row = table.rows[index]
    cells: list[tuple[str, str | None]] = [(row.arm, None), (row.optimizer, None), (row.schedule, None),
                                           (row.lr_label, None), (seeds_cell(row), None)]
    marks = {metric: table.marks(metric) for metric in table.ranked_metrics}
    for metric in table.metrics:
        cells.append((metric_cell(row, metric), marks.get(metric, {}).get(index)))
    return cells


def table_headers(table: ResultTable) -> list[str]:
    return [*HEADERS, *(metric.replace("_", " ") for metric in table.metrics)]


def markdown_table(table: ResultTable) -> str:
    lines = ["| " + " | ".join(table_headers(table)) + " |",
             "| " + " | ".join(["---"] * len(HEADERS) + ["---:"] * len(table.metrics)) + " |"]
    for index in range(len(table.rows)):
        lines.append("| " + " | ".join(MARKDOWN_MARKS[mark].format(markdown_text(text))
                                       for text, mark in table_cells(table, index)) + " |")
    return "\n".join(lines)


def latex_table(table: ResultTable) -> str:
    lines = [
        "\\begin{tabular}{" + "l" * len(HEADERS) + "r" * len(table.metrics) + "}",
        "\\toprule",
        " & ".join(_latex_escape(h) for h in table_headers(table)) + " \\\\",
        "\\midrule",
    ]
    for index in range(len(table.rows)):
        cells = [LATEX_MARKS[mark].format(_latex_escape(text)) for text, mark in table_cells(table, index)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    caption = (f"% {_latex_escape(table.model)} / {_latex_escape(table.task)}: mean $\\pm$ sample std over seeds; "
               f"primary metric {table.primary_metric}; best bold, second underlined. Needs \\usepackage{{booktabs}}.")
    return caption + "\n" + "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    replacements = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                    "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                    "±": "$\\pm$", "α": "$\\alpha$", "×": "$\\times$", "–": "--"}
    return "".join(replacements.get(char, char) for char in text)


def csv_table(table: ResultTable) -> str:
    """Full-precision numbers, one row per configuration: mean, std and the number of done seeds per metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "task", "arm", "optimizer", "schedule", "lr", "lr_label", "seeds_done", "seeds_total",
                     "statuses", *(f"{m}_{stat}" for m in table.metrics for stat in ("mean", "std"))])
    for row in table.rows:
        statuses = ";".join(f"{status}={n}" for status, n in row.statuses.items())
        stats = [value for m in table.metrics for value in (row.mean(m), row.std(m))]
        lr = "" if row.lr is None else repr(row.lr)  # empty: the optimizer computes its own step size
        writer.writerow([table.model, table.task, row.arm, row.optimizer, row.schedule, lr, row.lr_label,
                         row.seeds_done, len(row.trials), statuses, *("" if v is None else repr(v) for v in stats)])
    return buffer.getvalue()


def layout_cells(row: LayoutRow) -> list[tuple[str, str | None]]:
    """(text, mark) per column of a published-layout row: its label, then each configuration's cell."""
    marks = row.marks()
    return [(f"{row.metric.replace('_', ' ')}, {row.model}", None)] + [
        (MISSING if cell is None else metric_cell(cell, row.metric), marks.get(index))
        for index, cell in enumerate(row.cells)]


def published_markdown(table: PublishedTable) -> str:
    lines = ["| metric, model | " + " | ".join(markdown_text(c) for c in table.columns) + " |",
             "| --- | " + " | ".join(["---:"] * len(table.columns)) + " |"]
    for row in table.rows:
        lines.append("| " + " | ".join(MARKDOWN_MARKS[mark].format(markdown_text(text))
                                       for text, mark in layout_cells(row)) + " |")
    return "\n".join(lines)


def published_latex(table: PublishedTable) -> str:
    lines = [
        "\\begin{tabular}{l" + "r" * len(table.columns) + "}",
        "\\toprule",
        " & ".join(_latex_escape(h) for h in ["metric, model", *table.columns]) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        lines.append(" & ".join(LATEX_MARKS[mark].format(_latex_escape(text))
                                for text, mark in layout_cells(row)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    caption = (f"% {_latex_escape(table.task)}: a row per metric and model, a column per configuration; mean "
               "$\\pm$ sample std over seeds; best bold, second underlined in each row. Needs \\usepackage{booktabs}.")
    return caption + "\n" + "\n".join(lines) + "\n"


def published_csv(table: PublishedTable) -> str:
    """Full precision: per metric and model, each configuration's mean and std."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["task", "metric", "model", *(f"{c} {stat}" for c in table.columns for stat in ("mean", "std"))])
    for row in table.rows:
        stats = [value for cell in row.cells
                 for value in ((None, None) if cell is None else (cell.mean(row.metric), cell.std(row.metric)))]
        writer.writerow([table.task, row.metric, row.model, *("" if v is None else repr(v) for v in stats)])
    return buffer.getvalue()


def rich_table(table: ResultTable) -> Table:
    style = {"best": "bold", "second": "underline", None: ""}
    rich = Table(title=f"{table.model} · {table.task} (primary: {table.primary_metric})", title_justify="left")
    for index, header in enumerate(table_headers(table)):
        rich.add_column(header, justify="right" if index >= len(HEADERS) else "left")
    for index in range(len(table.rows)):
        rich.add_row(*(f"[{style[mark]}]{text}[/]" if mark else text for text, mark in table_cells(table, index)))
    return rich


def markdown_report(results: StudyResults) -> str:
    study, budget = results.study, results.study.budget
    counts = ", ".join(f"{n} {status}" for status, n in results.counts.items() if n)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Study `{study.name}`", ""]
    if study.description:
        lines += [markdown_text(study.description), ""]
    lines += [
        f"- Trials: {sum(results.counts.values())} ({counts})",
        f"- Spec: sha256 `{study.spec_hash[:16]}`, stored with the results in `results.sqlite`",
        f"- Generated {generated} from the results store only",
        "",
        "## Tuning budget",
        "",
        f"Search space: {markdown_text(budget['search_space'])}",
        "",
        f"Declared budget: at most {budget['trials_per_arm']} configuration(s) (schedule x learning rate) per arm. "
        f"Each configuration runs with seeds {', '.join(map(str, results.seeds))}; seeds repeat a configuration, "
        "they are not extra trials.",
        "",
        "| arm | configurations tried |",
        "| --- | ---: |",
        *(f"| {markdown_text(arm)} | {n} |" for arm, n in results.configurations_per_arm.items()),
        "",
    ]
    for table in results.tables:
        lines += [
            f"## {markdown_text(table.model)} · {markdown_text(table.task)}",
            "",
            f"Primary metric: **{table.primary_metric}**. Final evaluation after training, as mean ± sample standard "
            "deviation over the seeds that finished (seeds column: done/total). **Bold**: best mean, "
            "<u>underlined</u>: second. Train loss: the loss of the last optimizer step.",
            "",
            markdown_table(table),
            "",
        ]
    for table in published_tables(results):
        lines += [
            f"## {markdown_text(table.task)}: the published layout",
            "",
            "As the AdamDDS study's tables (docs/protocols.md §A.8): a row per metric and model, a column per "
            "configuration, mean ± sample standard deviation over seeds; marks rank each row.",
            "",
            published_markdown(table),
            "",
        ]
    lines += [
        "## Reading these tables",
        "",
        "- Every configuration the study ran is reported. The marks rank results on the evaluation split; they "
        "select nothing (docs/protocols.md §G.8). To pick a configuration, select on a dev split carved from the "
        "training data.",
        "- Diverged and failed seeds are counted in the seeds column and left out of the means.",
        "",
    ]
    if results.environments:
        lines += ["## Environment", ""]
        lines += [f"- {markdown_text(_environment_line(environment))}" for environment in results.environments]
        lines.append("")
    return "\n".join(lines)


def _environment_line(environment: dict) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in environment.get("packages", {}).items())
    hardware = environment.get("hardware", {})
    device = hardware.get("gpu") or f"CPU ({hardware.get('cpu_threads', '?')} threads)"
    return f"python {environment.get('python', '?')} on {environment.get('platform', '?')}, {device}; {packages}"
