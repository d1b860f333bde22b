"""The study report as one interactive HTML page (plotly). It is self-contained: plotly.js is inlined once, every
figure's data is in the page, and nothing is fetched, so it opens offline and can be mailed as one file.

The header holds the study, its trials by status, the tuning budget and (collapsed) the environments. Then, per
model x task: the results table (the Markdown table's cells, best bold, second underlined), the loss and learning
rate of every trial per step, the final metrics as bars (mean ± std over seeds), a radar across the metrics, memory
and throughput per step, utilisation over wall time, and, for dds learning rates, the step-size estimate α with its interval. Last, per task,
the published layout (a row per metric x model, a column per configuration). A configuration keeps its colour
throughout.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from .figures import configuration_colours, configuration_label
from .render import HEADERS, layout_cells, table_cells, table_headers
from .results import TRAIN_LOSS, PublishedTable, ResultTable, StudyResults, published_tables

Curves = dict[str, list[dict[str, Any]]]  # trial key -> its step metrics, as Store.step_metrics returns them

FIGURE_HEIGHT = 420
MEMORY_KEYS = ("cuda_allocated_bytes", "rss_bytes")  # what a step records on a GPU, else on the CPU
UTILISATION_KEYS = ("gpu_utilization", "cpu_percent")  # what the utilisation sampler records on a GPU, else the CPU
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MARKS = {"best": "<strong>{}</strong>", "second": "<u>{}</u>", None: "{}"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 1rem 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; border-radius: 2px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }
.figures figure.wide { grid-column: 1 / -1; }
figure { margin: 0; border: 1px solid #eee; padding: 0.3rem; }
figcaption { font-size: 0.85rem; color: #555; padding: 0.2rem 0.5rem; }
pre { background: #f6f6f6; padding: 0.5rem; overflow-x: auto; }
"""


def html_report(results: StudyResults, curves: Curves, timelines: Curves | None = None) -> str:
    """The page. ``<body data-figures="N">`` says how many plots it draws, so a browser test can count them.
    ``timelines``: trial key -> its utilisation samples (the run record's ``utilisation``)."""
    sections, count = [], 0
    for table in results.tables:
        blocks = []
        for figure, caption, wide in table_figures(table, curves, timelines or {}):
            div = pio.to_html(figure, include_plotlyjs=False, full_html=False, config=PLOT_CONFIG,
                              div_id=f"figure-{count}")  # not random ids: the same store gives the same page
            blocks.append(f"<figure{' class=wide' if wide else ''}>{div}"
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            count += 1
        sections.append(
            f"<section><h2>{html.escape(f'{table.model} · {table.task}')}</h2>"
            f"<p>Primary metric: <strong>{html.escape(table.primary_metric)}</strong>. Final evaluation after "
            "training, as mean ± sample standard deviation over the seeds that finished (seeds column: done/total). "
            "<strong>Bold</strong>: best mean, <u>underlined</u>: second. Train loss: the loss of the last optimizer "
            f"step.</p>{results_table(table)}<div class=figures>{''.join(blocks)}</div></section>")
    for table in published_tables(results):
        sections.append(
            f"<section><h2>{html.escape(table.task)}: the published layout</h2><p>As the AdamDDS study's tables: a "
            "row per metric and model, a column per configuration, mean ± sample standard deviation over seeds; "
            f"marks rank each row.</p>{published_table(table)}</section>")
    title = html.escape(f"{results.study.name} · adamlab report")
    # plotly.js once, inline (never a CDN): the figures above only call Plotly.newPlot.
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title><style>{STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head>"
            f'<body data-figures="{count}">{header(results)}{"".join(sections)}</body></html>\n')


def header(results: StudyResults) -> str:
    study, budget = results.study, results.study.budget
    counts = ", ".join(f"{n} {status}" for status, n in results.counts.items() if n)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    arms = "".join(f"<tr><td>{html.escape(arm)}</td><td class=num>{n}</td></tr>"
                   for arm, n in results.configurations_per_arm.items())
    environments = "".join(f"<pre>{html.escape(json.dumps(e, indent=2))}</pre>" for e in results.environments)
    return (
        f"<h1>Study <code>{html.escape(study.name)}</code></h1>"
        + (f"<p>{html.escape(study.description)}</p>" if study.description else "")
        + f"<ul><li>Trials: {sum(results.counts.values())} ({html.escape(counts)})</li>"
        f"<li>Spec: sha256 <code>{html.escape(study.spec_hash[:16])}</code>, stored with the results</li>"
        f"<li>Generated {generated} from the results store only</li></ul>"
        "<h2>Tuning budget</h2>"
        f"<p>Search space: {html.escape(str(budget['search_space']))}</p>"
        f"<p>Declared budget: at most {html.escape(str(budget['trials_per_arm']))} configuration(s) (schedule x "
        f"learning rate) per arm. Each configuration runs with seeds {', '.join(map(str, results.seeds))}; seeds "
        "repeat a configuration, they are not extra trials.</p>"
        f"<table><tr><th>arm</th><th class=num>configurations tried</th></tr>{arms}</table>"
        "<p>Every configuration the study ran is reported. The marks rank results on the evaluation split; they "
        "select nothing. Diverged and failed seeds are counted in the seeds column and left out of the means.</p>"
        f"<details><summary>Environment ({len(results.environments)} distinct: packages, hardware)</summary>"
        f"{environments}</details>"
    )


def results_table(table: ResultTable) -> str:
    """The Markdown table's cells; each metric cell also carries its full-precision mean in ``data-mean``."""
    colours = configuration_colours(len(table.rows))
    head = "".join(f"<th{' class=num' if column >= len(HEADERS) else ''}>{html.escape(text)}</th>"
                   for column, text in enumerate(table_headers(table)))
    rows = []
    for index, row in enumerate(table.rows):
        cells = table_cells(table, index)
        swatch = f'<span class=swatch style="background:{colours[index]}"></span>'  # the row's colour in the plots
        tds = [f"<td>{swatch if column == 0 else ''}{html.escape(text)}</td>"
               for column, (text, _) in enumerate(cells[:len(HEADERS)])]
        for metric, (text, mark) in zip(table.metrics, cells[len(HEADERS):]):
            mean = "" if row.mean(metric) is None else repr(row.mean(metric))
            tds.append(f'<td class=num data-metric="{html.escape(metric)}" data-mean="{mean}">'
                       f"{MARKS[mark].format(html.escape(text))}</td>")
        rows.append(f'<tr data-configuration="{html.escape(configuration_label(row))}">{"".join(tds)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def published_table(table: PublishedTable) -> str:
    head = "".join(f"<th{' class=num' if column else ''}>{html.escape(text)}</th>"
                   for column, text in enumerate(["metric, model", *table.columns]))
    rows = []
    for row in table.rows:
        (label, _), *cells = layout_cells(row)
        tds = "".join(f"<td class=num>{MARKS[mark].format(html.escape(text))}</td>" for text, mark in cells)
        rows.append(f"<tr><td>{html.escape(label)}</td>{tds}</tr>")
    return f"<table class=published><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def table_figures(table: ResultTable, curves: Curves, timelines: Curves | None = None
                  ) -> list[tuple[go.Figure, str, bool]]:
    """(figure, caption, full width) for one model x task; figures without data are left out."""
    timelines = timelines or {}
    samples = [sample for row in table.rows for trial in row.trials for sample in timelines.get(trial.key, [])]
    busy_key = next((key for key in UTILISATION_KEYS if any(sample.get(key) is not None for sample in samples)), None)
    utilisation = step_curves(table, timelines, lambda r: r.get(busy_key), "Utilisation", f"{busy_key} (%)",
                              x_key="seconds") if busy_key else None
    busy_kind = ("GPU utilisation (NVML)" if busy_key == "gpu_utilization"
                 else "the process's CPU utilisation, percent of one core")
    records = [record for row in table.rows for trial in row.trials for record in curves.get(trial.key, [])]
    memory_key = next((key for key in MEMORY_KEYS
                       if any((record.get("memory") or {}).get(key) is not None for record in records)), None)
    memory = step_curves(table, curves, lambda r: (r.get("memory") or {}).get(memory_key), "Memory",
                         f"{memory_key} (MiB)", scale=2**-20) if memory_key else None
    memory_kind = "CUDA memory allocated" if memory_key == "cuda_allocated_bytes" else "the process's resident set"
    candidates = [
        (step_curves(table, curves, lambda r: r["loss"], "Training loss", "loss"),
         "Training loss per step, one line per trial; a configuration's seeds share its colour and legend entry "
         "(click it to hide them). Dashed: diverged.", False),
        (step_curves(table, curves, lambda r: r["lr"], "Learning rate", "lr"),
         "The learning rate each trial's schedule set at every step.", False),
        (metric_bars(table), "Final metrics per configuration: mean over the seeds that finished, error bars one "
                             "sample standard deviation (none with a single seed). Train loss: lower is better.", True),
        (metric_radar(table), "Each metric rescaled to [0, 1] across configurations (1: the best mean, 0: the "
                              "worst; train loss inverted, so 1 is the lowest loss). Hover for the means.", False),
        (stepsize_chart(table), "The data-dependent step size α of the dds configurations with its bootstrap "
                                "interval over the estimation batches (none for a published α), and the learning "
                                "rate each used (α × multiplier). With the max aggregate the interval shows how "
                                "much larger α would be on less extreme batches.", False),
        (memory, f"Memory per step: {memory_kind}.", False),
        (step_curves(table, curves, lambda r: r["tokens_per_second"], "Throughput", "tokens / s"),
         "Training throughput per step: the batch's tokens over the step's wall time.", False),
        (utilisation, f"Utilisation over the run's wall time, sampled on a timer (evaluation included): "
                      f"{busy_kind}.", False),
    ]
    return [(figure, caption, wide) for figure, caption, wide in candidates if figure]


def step_curves(table: ResultTable, curves: Curves, value: Callable[[dict[str, Any]], float | None], title: str,
                y_title: str, scale: float = 1.0, x_key: str = "step") -> go.Figure | None:
    figure = go.Figure()
    for colour, row in zip(configuration_colours(len(table.rows)), table.rows):
        label = configuration_label(row)
        for trial in row.trials:
            records = curves.get(trial.key, [])
            values = [_finite(value(record), scale) for record in records]
            if all(v is None for v in values):
                continue
            figure.add_scatter(
                x=[record[x_key] for record in records], y=values, mode="lines", name=label, legendgroup=label,
                showlegend=not any(trace.legendgroup == label for trace in figure.data),
                line={"color": colour, "dash": "dash" if trial.status == "diverged" else "solid"},
                meta=f"{label}, seed {trial.seed} ({trial.status})",
                hovertemplate=f"%{{meta}}<br>{x_key} %{{x:.4g}}: %{{y:.4g}}<extra></extra>")
    return _layout(figure, title, x_key, y_title) if figure.data else None


def metric_bars(table: ResultTable) -> go.Figure | None:
    metrics = [*table.ranked_metrics, TRAIN_LOSS]
    labels = [configuration_label(row) for row in table.rows]
    if all(row.mean(metric) is None for row in table.rows for metric in metrics):
        return None
    figure = make_subplots(rows=1, cols=len(metrics), shared_yaxes=True, horizontal_spacing=0.03,
                           subplot_titles=[metric.replace("_", " ") for metric in metrics])
    for column, metric in enumerate(metrics, start=1):
        figure.add_bar(x=[row.mean(metric) for row in table.rows], y=labels, orientation="h", showlegend=False,
                       marker_color=configuration_colours(len(table.rows)), name=metric,
                       error_x={"type": "data", "array": [row.std(metric) for row in table.rows]},
                       hovertemplate="%{y}<br>%{x:.4f}<extra></extra>", row=1, col=column)
    figure.update_yaxes(autorange="reversed")  # table order, top to bottom
    return _layout(figure, "Final metrics (mean ± std over seeds)", None, None,
                   height=max(FIGURE_HEIGHT, 120 + 40 * len(table.rows)))


def metric_radar(table: ResultTable) -> go.Figure | None:
    metrics = [*table.ranked_metrics, TRAIN_LOSS]
    means = {metric: [row.mean(metric) for row in table.rows] for metric in metrics}
    figure = go.Figure()
    for index, (colour, row) in enumerate(zip(configuration_colours(len(table.rows)), table.rows)):
        if row.seeds_done == 0:
            continue
        scaled = [_rescaled(means[metric], index, invert=metric == TRAIN_LOSS) for metric in metrics]
        raw = [means[metric][index] for metric in metrics]
        axes = [metric.replace("_", " ") for metric in metrics]
        figure.add_scatterpolar(r=[*scaled, scaled[0]], theta=[*axes, axes[0]], customdata=[*raw, raw[0]],
                                name=configuration_label(row), fill="toself", opacity=0.6, line={"color": colour},
                                hovertemplate="%{theta}: %{customdata:.4f}<extra>%{fullData.name}</extra>")
    if len(figure.data) < 2:  # one configuration has nothing to be compared with
        return None
    figure.update_polars(radialaxis={"range": [0, 1], "tickvals": [0, 0.5, 1]})
    return _layout(figure, "Metrics, rescaled across configurations", None, None)


def stepsize_chart(table: ResultTable) -> go.Figure | None:
    """Per dds configuration: α with its interval, and its learning rate. Seeds share the estimate (one per model and
    task), so the first trial's is the configuration's."""
    colours = configuration_colours(len(table.rows))
    chosen = [(colours[i], row, row.trials[0].stepsize_estimate) for i, row in enumerate(table.rows)
              if row.trials[0].stepsize_estimate is not None]
    if not chosen:
        return None
    labels = [configuration_label(row) for _, row, _ in chosen]
    alphas = [estimate["alpha"] for _, _, estimate in chosen]
    intervals = [estimate.get("alpha_interval") or (alpha, alpha) for (_, _, estimate), alpha in zip(chosen, alphas)]
    figure = go.Figure()
    figure.add_scatter(x=labels, y=alphas, mode="markers", name="α with its interval",
                       marker={"size": 10, "color": "#333"},
                       error_y={"type": "data", "array": [high - a for (_, high), a in zip(intervals, alphas)],
                                "arrayminus": [a - low for (low, _), a in zip(intervals, alphas)]},
                       customdata=[_estimate_text(estimate) for _, _, estimate in chosen],
                       hovertemplate="α %{y:.4g}<br>%{customdata}<extra></extra>")
    figure.add_scatter(x=labels, y=[row.lr for _, row, _ in chosen], mode="markers",
                       name="learning rate (α × multiplier)",
                       marker={"size": 12, "symbol": "diamond", "color": [colour for colour, _, _ in chosen]},
                       customdata=[f"{estimate['multiplier']:g}" for _, _, estimate in chosen],
                       hovertemplate="lr %{y:.4g} (α × %{customdata})<extra></extra>")
    figure.update_yaxes(type="log")
    return _layout(figure, "Step-size estimate α and the learning rates used", None, "step size")


def _estimate_text(estimate: dict[str, Any]) -> str:
    """Where α came from, its interval and, for an estimate, its inputs (K̂, L0, T)."""
    text = f"{estimate['source']} α"
    if estimate.get("alpha_interval"):
        low, high = estimate["alpha_interval"]
        text += f", {estimate['confidence']:.0%} interval [{low:.3g}, {high:.3g}]"
    if "K_hat" in estimate:
        text += f"<br>K̂ {estimate['K_hat']:.3g}, L0 {estimate['L0']:.3g}, T {estimate['T']}"
    return text


def _layout(figure: go.Figure, title: str, x_title: str | None, y_title: str | None,
            height: int = FIGURE_HEIGHT) -> go.Figure:
    figure.update_layout(title={"text": title, "x": 0.01}, template="plotly_white", height=height,
                         margin={"l": 60, "r": 20, "t": 50, "b": 40}, hovermode="closest",
                         legend={"orientation": "h", "yanchor": "top", "y": -0.15, "font": {"size": 11}})
    if x_title:
        figure.update_xaxes(title=x_title)
    if y_title:
        figure.update_yaxes(title=y_title)
    return figure


def _rescaled(values: list[float | None], index: int, invert: bool) -> float | None:
    """``values[index]`` min-max scaled over the configurations; 1 when all are equal."""
    known = [v for v in values if v is not None]
    value = values[index]
    if value is None:
        return None
    low, high = min(known), max(known)
    scaled = 1.0 if high == low else (value - low) / (high - low)
    return 1.0 - scaled if invert and high != low else scaled


def _finite(value: float | None, scale: float = 1.0) -> float | None:
    return value * scale if value is not None and math.isfinite(value) else None

