"""The report's figures for papers, as PNG: matplotlib ``Figure`` objects without pyplot, so no global state and
no display.

Per model x task: ``loss_figure`` (the training loss of each configuration: its mean over the seeds that finished,
their range shaded) and ``metrics_figure`` (the primary metric's mean over seeds, error bars one sample standard
deviation). A configuration keeps its colour in every figure, here and in the HTML report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from .results import ConfigurationResult, ResultTable

DPI = 150


def configuration_colours(count: int) -> list[str]:
    """One colour per configuration, in table order: tab10, or tab20 beyond ten (then cycled)."""
    palette = matplotlib.colormaps["tab10" if count <= 10 else "tab20"].colors
    return [to_hex(palette[i % len(palette)]) for i in range(count)]


def configuration_label(row: ConfigurationResult) -> str:
    return f"{row.arm} · {row.schedule} · lr {row.lr_label}"


def loss_figure(table: ResultTable, curves: dict[str, list[dict[str, Any]]]) -> Figure:
    """Training loss per step; diverged seeds are left out, as they are from the table's means."""
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.subplots()
    for colour, row in zip(configuration_colours(len(table.rows)), table.rows):
        per_step: dict[int, list[float]] = {}
        for trial in row.trials:
            if trial.status != "done":
                continue
            for record in curves.get(trial.key, []):
                if record["loss"] is not None and math.isfinite(record["loss"]):
                    per_step.setdefault(record["step"], []).append(record["loss"])
        if not per_step:
            continue
        steps = sorted(per_step)
        axes.plot(steps, [sum(per_step[s]) / len(per_step[s]) for s in steps], color=colour,
                  label=f"{configuration_label(row)} (n={row.seeds_done})")
        axes.fill_between(steps, [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps], color=colour,
                          alpha=0.2, linewidth=0)
    if axes.lines:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no finished trial recorded a loss", ha="center", va="center", transform=axes.transAxes)
    axes.set(xlabel="step", ylabel="training loss", title=f"{table.model} · {table.task}")
    axes.grid(alpha=0.3)
    return figure


def metrics_figure(table: ResultTable) -> Figure:
    """The primary metric per configuration, top to bottom in table order."""
    metric, count = table.primary_metric, len(table.rows)
    figure = Figure(figsize=(6.4, 1.2 + 0.45 * count), layout="constrained")
    axes = figure.subplots()
    means = [row.mean(metric) for row in table.rows]
    stds = [row.std(metric) for row in table.rows]
    positions = range(count)
    axes.barh(positions, [math.nan if m is None else m for m in means],
              xerr=[math.nan if s is None else s for s in stds], color=configuration_colours(count), capsize=3)
    for position, mean, std in zip(positions, means, stds):
        text = "no finished seed" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
        axes.annotate(text, (0 if mean is None else mean + (std or 0), position), xytext=(4, 0),
                      textcoords="offset points", va="center", fontsize="small")
    axes.set_yticks(list(positions), [configuration_label(row) for row in table.rows])
    axes.invert_yaxis()
    axes.margins(x=0.25)  # room for the value labels
    axes.set(xlabel=f"{metric} (mean ± std over seeds)", title=f"{table.model} · {table.task}")
    axes.grid(axis="x", alpha=0.3)
    return figure


def save_png(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path
