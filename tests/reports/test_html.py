"""The HTML report and the PNG figures: self-contained, every configuration shown, and the database's numbers."""

import html
import re
import statistics
from html.parser import HTMLParser

import matplotlib.image
import pytest
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

import adamlab.cli.study  # noqa: F401  (registers the study commands)
from adamlab.cli.app import app
from adamlab.reports import collect, write_report
from adamlab.reports.figures import DPI, configuration_label
from adamlab.reports.html import MARKS, stepsize_chart
from adamlab.reports.render import layout_cells
from adamlab.reports.results import published_tables
from adamlab.studies import Store

from .conftest import ESTIMATE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DDS_HALF, DDS_DOUBLE = "adamdds · constant · lr 0.002 (α×0.5)", "adamdds · constant · lr 0.008 (α×2)"


class TableCells(HTMLParser):
    """The metric cells of the page's results tables: (configuration, metric, data-mean, text, marked as)."""

    def __init__(self):
        super().__init__()
        self.cells, self.configuration, self.cell, self.marks = [], None, None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-configuration" in attrs:
            self.configuration = attrs["data-configuration"]
        elif tag == "td" and "data-metric" in attrs:
            self.cell = {"configuration": self.configuration, "metric": attrs["data-metric"],
                         "mean": attrs["data-mean"], "text": "", "mark": None}
        elif tag in ("strong", "u") and self.cell is not None:
            self.cell["mark"] = {"strong": "best", "u": "second"}[tag]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.cells.append(self.cell)
            self.cell = None


def database_values(study_dir) -> dict[tuple[str, str], list[float]]:
    """(configuration, metric) -> its value in each done seed, straight from the tables of the store."""
    store = Store.open(study_dir)
    try:
        finals = store.final_evaluations()
        trials = store.trials()
        last_loss = {t.key: store.step_metrics(t.key)[-1]["loss"] for t in trials if t.status == "done"}
    finally:
        store.close()
    values = {}
    for trial in sorted(trials, key=lambda t: t.seed):
        if trial.status != "done":
            continue
        lr_label = f"{trial.lr:g}" if trial.stepsize_estimate is None else \
            f"{trial.lr:.3g} (α×{trial.stepsize_estimate['multiplier']:g})"
        configuration = f"{trial.arm} · {trial.schedule} · lr {lr_label}"
        for metric, value in {**finals[trial.key], "train_loss": last_loss[trial.key]}.items():
            values.setdefault((configuration, metric), []).append(value)
    return values


def test_the_page_is_self_contained(study_dir):
    page = write_report(study_dir).html.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert not re.search(r"<script[^>]*\ssrc=", page), "every script is inline"
    assert not re.search(r"<(link|img|iframe)\b", page), "nothing is loaded from elsewhere"
    assert page.count(get_plotlyjs()) == 1, "plotly.js is inlined once"
    assert not re.search(r"https?://", page.replace(get_plotlyjs(), "")), "no address outside plotly.js itself"
    declared = int(re.search(r'<body data-figures="(\d+)"', page).group(1))
    assert declared == page.count("Plotly.newPlot(") == 7  # loss, lr, bars, radar, step size, memory, throughput


def test_the_page_shows_every_configuration_the_budget_and_the_environment(study_dir):
    report = write_report(study_dir)
    page = report.html.read_text(encoding="utf-8")
    for table in report.results.tables:
        for row in table.rows:
            assert page.count(f'data-configuration="{html.escape(configuration_label(row))}"') == 1
    assert "<h1>Study <code>tiny</code></h1>" in page and "two arms on a tiny random model" in page
    assert "Trials: 10 (9 done, 1 diverged)" in page
    assert "Search space: one fixed learning rate per arm" in page
    assert "at most 3 configuration(s)" in page and "seeds 0, 1;" in page
    tried = dict(re.findall(r"<tr><td>([^<]+)</td><td class=num>(\d+)</td></tr>", page))
    assert tried == {"adam": "1", "adamw-cosine": "1", "lion_small": "1", "adamdds": "2"}
    assert "<details><summary>Environment (1 distinct" in page
    assert "x86_64 &lt;test&gt;" in page and "<test>" not in page  # store text is escaped


def test_the_table_shows_the_database_means_and_marks(study_dir):
    page = write_report(study_dir).html.read_text(encoding="utf-8")
    parser = TableCells()
    parser.feed(page)
    values = database_values(study_dir)
    assert len(parser.cells) == 5 * 5  # configurations x (accuracy, weighted f1, n total, n invalid, train loss)
    for cell in parser.cells:
        seeds = values[(cell["configuration"], cell["metric"])]
        mean = statistics.fmean(seeds)
        assert float(cell["mean"]) == mean, cell  # full precision, exactly the database's
        if cell["metric"] in ("n_total", "n_invalid"):
            assert cell["text"] == f"{mean:g}"
        else:
            std = f" ± {statistics.stdev(seeds):.4f}" if len(seeds) > 1 else ""
            assert cell["text"] == f"{mean:.4f}{std}", cell
    accuracy = {cell["configuration"]: cell["mark"] for cell in parser.cells if cell["metric"] == "accuracy"}
    assert accuracy == {"adam · constant · lr 0.01": None, "adamw-cosine · cosine · lr 0.01": "best",
                        "lion_small · constant · lr 0.0001": "second", DDS_HALF: None, DDS_DOUBLE: None}


def test_the_stepsize_plot_shows_alpha_with_its_interval(study_dir):
    store = Store.open(study_dir)
    try:
        (table,) = collect(store).tables
    finally:
        store.close()
    alpha_trace, lr_trace = stepsize_chart(table).data
    low, high = ESTIMATE["alpha_interval"]
    assert list(alpha_trace.x) == [DDS_HALF, DDS_DOUBLE]
    assert list(alpha_trace.y) == [ESTIMATE["alpha"]] * 2
    assert list(alpha_trace.error_y.array) == pytest.approx([high - ESTIMATE["alpha"]] * 2)
    assert list(alpha_trace.error_y.arrayminus) == pytest.approx([ESTIMATE["alpha"] - low] * 2)
    assert list(lr_trace.y) == pytest.approx([0.5 * ESTIMATE["alpha"], 2 * ESTIMATE["alpha"]])
    assert "90% interval [0.003, 0.006]" in alpha_trace.customdata[0]


def test_the_png_figures_are_written(study_dir):
    report = write_report(study_dir)
    assert [path.name for path in report.figures] == ["loss_tiny-llama__ag_news.png",
                                                      "metrics_tiny-llama__ag_news.png"]
    for path in report.figures:
        assert path.parent == report.folder / "figures"
        assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 10_000
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[1] == 6.4 * DPI and pixels.shape[0] >= 3 * DPI
        assert (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.02, f"{path.name} looks blank"
    first = [path.read_bytes() for path in report.figures]
    assert [path.read_bytes() for path in write_report(study_dir).figures] == first, "deterministic"


def test_the_cli_names_the_html_report(study_dir):
    result = CliRunner().invoke(app, ["report", str(study_dir)])
    assert result.exit_code == 0, result.output
    assert f"html report: {study_dir / 'report' / 'report.html'}" in result.output


def test_the_page_ends_with_the_published_layout(study_dir):
    report = write_report(study_dir)
    page = report.html.read_text(encoding="utf-8")
    (table,) = published_tables(report.results)
    published = page[page.index("<table class=published>"):]
    published = published[:published.index("</table>")]
    assert published.count("<tr>") == 1 + len(table.rows)
    for row in table.rows:
        (label, _), *cells = layout_cells(row)
        expected = "".join(f"<td class=num>{MARKS[mark].format(html.escape(text))}</td>" for text, mark in cells)
        assert f"<tr><td>{html.escape(label)}</td>{expected}</tr>" in published
