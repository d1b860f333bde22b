"""The report of a recommendation: the verdict first, then its evidence, then every run.

``write_verdict_report(folder)`` reads ``recommendation.json`` and the run record (``recommend.sqlite``) and
writes ``folder/report/report.md``, a self-contained ``report.html`` (plotly, inlined) and PNG figures:

* the verdict line and how to use it;
* the confidence table: per finalist and the baseline, dev mean with its 95% interval over seeds and examples,
  the paired difference to AdamW, P(best), and the test score (read once, after selection) for the pick and the
  baseline; the majority-class baseline with its standard error;
* the rung-by-rung survival plot (dev accuracy of every configuration at each rung; pruned ones stop, excluded
  ones are marked), which is also the finalists' dev curve over the rungs;
* what was excluded and why, what the search cost;
* every run: stage, step, status, dev accuracy with the binomial standard error of the dev size.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from plotly.offline import get_plotlyjs  # noqa: E402

from ..studies.confidence import binomial_se  # noqa: E402
from ..studies.recommend import RESULT_FILE, RunRecord, read_runs, verdict_line  # noqa: E402
from ..training.lr_source import format_lr  # noqa: E402

REPORT_FOLDER = "report"


@dataclass(frozen=True)
class VerdictReport:
    markdown: Path
    html: Path
    figures: list[Path]


def _label(config: dict[str, Any]) -> str:
    return f"{config['optimizer']} lr {format_lr(config['lr'], '.3g')} {config['schedule']}"


def _interval(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{summary['mean']:.3f} [{summary['ci95'][0]:.3f}, {summary['ci95'][1]:.3f}] ({summary['seeds']} seeds)"


def _points(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{100 * summary['mean']:+.1f} [{100 * summary['ci95'][0]:+.1f}, {100 * summary['ci95'][1]:+.1f}]"


def survival(runs: list[RunRecord]) -> dict[str, list[tuple[int, float | None, str | None]]]:
    """Per configuration (seed of the search only), its (step, dev accuracy, exclusion reason) at each rung."""
    curves: dict[str, list[tuple[int, float | None, str | None]]] = {}
    for run in sorted(runs, key=lambda r: r.step):
        if run.stage.startswith("rung-"):
            curves.setdefault(_label(run.candidate), []).append((run.step, run.dev.get("accuracy"), run.reason))
    return curves


def confidence_rows(recommendation: dict[str, Any]) -> list[list[str]]:
    r = recommendation
    rows = [["**" + _label(r) + "** (pick)", _interval(r["dev"]), _points(r["delta_vs_baseline"]),
             f"{r['p_best']:.2f}", _interval(r["test"])]]
    for alternative in r["alternatives"]:
        is_baseline = (alternative["optimizer"] == r["baseline"]["optimizer"] and alternative["lr"] == r["baseline"]["lr"]
                       and alternative["schedule"] == r["baseline"]["schedule"])
        rows.append([_label(alternative) + (" (baseline)" if is_baseline else ""), _interval(alternative["dev"]),
                     _points(alternative["delta_vs_baseline"]), f"{alternative['p_best']:.2f}",
                     _interval(r["baseline"].get("test")) if is_baseline else "not read"])
    return rows


def close_calls(calls: list[dict[str, Any]]) -> str:
    """The trials continued past a rung beyond its top 1/eta, within one dev standard error of the cut."""
    return "".join(f"; after step {c['step']} also {', '.join(c['continued'])} (within one standard error of the cut)"
                   for c in calls)


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_rows(runs: list[RunRecord], n_dev: int) -> list[list[str]]:
    rows = []
    for run in runs:
        accuracy = run.dev.get("accuracy")
        shown = "-" if accuracy is None else f"{accuracy:.3f} ± {binomial_se(accuracy, n_dev):.3f}"
        rows.append([run.stage, _label(run.candidate), str(run.seed), str(run.step), run.status, str(run.steps_run),
                     shown, run.reason or (f"flagged, kept in the ranking: {run.dev['flagged']}"
                                           if run.dev.get("flagged") else "")])
    return rows


CONFIDENCE_HEADERS = ["configuration", "dev accuracy [95% CI]", "vs AdamW (points) [95% CI]", "P(best)",
                      "test accuracy [95% CI]"]
RUN_HEADERS = ["stage", "configuration", "seed", "step", "status", "steps run", "dev accuracy ± SE", "excluded"]


def survival_png(curves, rungs: list[int], majority: float, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    palette = plt.get_cmap("tab20")  # 20 distinct colours: the default cycle repeats after 10 configurations
    for index, (label, points) in enumerate(curves.items()):
        steps = [s for s, a, _ in points if a is not None]
        values = [a for _, a, _ in points if a is not None]
        line, = axes.plot(steps, values, marker="o", linewidth=1, label=label, color=palette(index % 20))
        for step, accuracy, reason in points:
            if reason is not None and accuracy is not None:
                axes.plot([step], [accuracy], marker="x", color=line.get_color(), markersize=10)
    axes.axhline(majority, color="grey", linestyle="--", label="majority class")
    axes.set_xticks(rungs)
    axes.set_xlabel("step (rung)")
    axes.set_ylabel("dev accuracy")
    axes.set_title("Successive halving: dev accuracy at each rung (x: excluded)")
    axes.legend(fontsize=6, loc="lower right", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _survival_plotly(curves, majority: float) -> go.Figure:
    figure = go.Figure()
    for label, points in curves.items():
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                    name=label, text=[p[2] or "" for p in points],
                                    marker={"symbol": ["x" if p[2] else "circle" for p in points], "size": 9}))
    figure.add_hline(y=majority, line_dash="dash", line_color="grey", annotation_text="majority class")
    figure.update_layout(title="Dev accuracy at each rung (pruned configurations stop; x: excluded)",
                         xaxis_title="step", yaxis_title="dev accuracy", height=460)
    return figure


def _confidence_plotly(recommendation: dict[str, Any]) -> go.Figure:
    entries = [(_label(recommendation), recommendation["dev"])] + [
        (_label(a), a["dev"]) for a in recommendation["alternatives"]]
    figure = go.Figure(go.Scatter(
        x=[e[1]["mean"] for e in entries], y=[e[0] for e in entries], mode="markers",
        error_x={"type": "data", "symmetric": False, "array": [e[1]["ci95"][1] - e[1]["mean"] for e in entries],
                 "arrayminus": [e[1]["mean"] - e[1]["ci95"][0] for e in entries]}))
    figure.update_layout(title="Finalists: dev accuracy with 95% intervals (seeds and examples)",
                         xaxis_title="dev accuracy", height=120 + 50 * len(entries))
    return figure


def write_verdict_report(folder: str | Path) -> VerdictReport:
    folder = Path(folder)
    result_file = folder / RESULT_FILE
    if not result_file.is_file():
        raise FileNotFoundError(f"{folder} holds no {RESULT_FILE}; run `adamlab recommend` first")
    r = json.loads(result_file.read_text())
    runs = read_runs(folder)
    out = folder / REPORT_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    n_dev = r["dev_split"]["n_dev"]
    majority = r["majority_baseline"]
    curves = survival(runs)
    png = survival_png(curves, r["search"]["rungs"], majority["dev"], out / "survival.png")
    cost = r["cost"]
    excluded = [f"* {_label(e['config'])}: {e['reason']}" for e in r["excluded"]] or ["* none"]
    use = [f"* {where}: `{how}`" for where, how in r["use_it"].items()]
    confidence = _markdown_table(CONFIDENCE_HEADERS, confidence_rows(r))
    sections = [
        f"# Recommendation: {r['model']} on {r['task']}, {r['steps']} steps",
        f"**{verdict_line(r)}**",
        "## How to use it", "\n".join(use),
        "## Evidence",
        f"Selected on a dev split of {n_dev} training examples (seed {r['dev_split']['seed']}, "
        f"{'stratified' if r['dev_split']['stratified'] else 'not stratified'}, disjoint from the "
        f"{r['dev_split']['n_train']} trained on). Majority-class baseline: dev {majority['dev']:.3f} "
        f"(SE {majority['se']:.3f}), test {majority['test']:.3f}. The test split was read once, after selection, "
        "for the pick and the baseline only.",
        confidence,
        f"Search: {r['search']['configurations']} configurations, successive halving with eta "
        f"{r['search']['eta']}, rungs at steps {r['search']['rungs']} ({r['search']['survivors']} configurations "
        f"planned to reach each){close_calls(r['search'].get('close_calls', []))}; finalists "
        f"{', '.join(r['search']['finalists'])}.",
        "![survival](survival.png)",
        "### Excluded", "\n".join(excluded),
        "### Cost",
        f"{cost['trial_steps']:,} trial-steps, {100 * cost['share_of_grid']:.1f}% of the {cost['grid_trial_steps']:,} "
        f"a full grid with the same seeds would take; {cost.get('trial_seconds', cost['wall_seconds']):.0f} s of "
        "training and evaluation runs (wall time, over every invocation).",
        "## Every run (dev split)", _markdown_table(RUN_HEADERS, run_rows(runs, n_dev)),
    ]
    markdown = out / "report.md"
    markdown.write_text("\n\n".join(sections) + "\n")

    def table_html(headers, rows) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('**', '')}</td>" for c in row) + "</tr>"
                       for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    figures = [_survival_plotly(curves, majority["dev"]), _confidence_plotly(r)]
    plots = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Recommendation</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1rem}"
        "table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<h1>Recommendation: {html.escape(r['model'])} on {html.escape(r['task'])}</h1>"
        f"<p><strong>{html.escape(verdict_line(r))}</strong></p>"
        "<h2>How to use it</h2><ul>" + "".join(f"<li>{html.escape(w)}: <code>{html.escape(h)}</code></li>"
                                                for w, h in r["use_it"].items()) + "</ul>"
        "<h2>Evidence</h2>" + table_html(CONFIDENCE_HEADERS, confidence_rows(r)) + plots
        + "<h3>Excluded</h3><ul>" + "".join(f"<li>{html.escape(_label(e['config']))}: {html.escape(e['reason'])}</li>"
                                            for e in r["excluded"]) + "</ul>"
        + "<h2>Every run (dev split)</h2>" + table_html(RUN_HEADERS, run_rows(runs, n_dev)) + "</body></html>"
    )
    page_file = out / "report.html"
    page_file.write_text(page)
    return VerdictReport(markdown, page_file, [png])
