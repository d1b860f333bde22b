"""A study's results as report tables, read from its store and nothing else.

One table per model x task; one row per configuration (arm, schedule, learning rate) with every metric's mean and
sample standard deviation over the seeds that finished. Every configuration is a row: marking the best and the
second best by mean selects nothing (docs/protocols.md §G.8).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..studies.store import Store, StudyRow, TrialRow
from ..tasks import get_task
from ..training.lr_source import format_lr

COUNT_METRICS = ("n_total", "n_invalid", "n_tokens")  # counts, reported but never ranked (n_tokens: perplexity's)
TRAIN_LOSS = "train_loss"  # the loss of the last optimizer step


@dataclass
class ConfigurationResult:
    """One configuration of one model and task, over its seeds."""

    arm: str
    optimizer: str
    schedule: str
    lr: float | None  # None: the optimizer computes its own step size
    lr_label: str
    trials: list[TrialRow]  # in seed order
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # trial key -> final metrics, done trials only

    @property
    def values(self) -> dict[str, list[float]]:
        """Metric -> its value in each done trial, in seed order."""
        values: dict[str, list[float]] = {}
        for trial in self.trials:
            for metric, value in self.scores.get(trial.key, {}).items():
                values.setdefault(metric, []).append(value)
        return values

    @property
    def seeds_done(self) -> int:
        return sum(trial.status == "done" for trial in self.trials)

    @property
    def statuses(self) -> dict[str, int]:
        return dict(Counter(trial.status for trial in self.trials))

    def mean(self, metric: str) -> float | None:
        values = self.values.get(metric, [])
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        """The sample standard deviation over seeds; None with fewer than two."""
        values = self.values.get(metric, [])
        return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class ResultTable:
    model: str
    task: str
    primary_metric: str
    metrics: list[str]  # the primary metric, the task's other scores, the counts, then the final training loss
    rows: list[ConfigurationResult]

    @property
    def ranked_metrics(self) -> list[str]:
        return [m for m in self.metrics if m not in COUNT_METRICS and m != TRAIN_LOSS]

    def marks(self, metric: str) -> dict[int, str]:
        """Row index -> "best" or "second" by mean (higher is better, lower for losses); ties share the mark."""
        return rank_marks({i: row.mean(metric) for i, row in enumerate(self.rows)}, metric)


LOWER_IS_BETTER = frozenset({"loss", "perplexity"})  # language modelling's evaluation metrics


def rank_marks(means: dict[int, float | None], metric: str = "") -> dict[int, str]:
    """Index -> "best" or "second" by mean, higher is better except for ``LOWER_IS_BETTER`` metrics; ties share the
    mark, missing means get none."""
    ranked = sorted({mean for mean in means.values() if mean is not None}, reverse=metric not in LOWER_IS_BETTER)
    marks = {}
    for label, value in zip(("best", "second"), ranked):
        marks.update({i: label for i, mean in means.items() if mean == value})
    return marks


@dataclass
class StudyResults:
    study: StudyRow
    counts: dict[str, int]
    seeds: list[int]
    configurations_per_arm: dict[str, int]  # what each arm tried on a model and task, beside the declared budget
    tables: list[ResultTable]
    environments: list[dict[str, Any]]  # the distinct environments the trials ran in


def collect(store: Store) -> StudyResults:
    trials = store.trials()
    evaluations = store.final_evaluations()
    losses = store.final_losses()
    tables: dict[tuple[str, str], ResultTable] = {}
    rows: dict[tuple, ConfigurationResult] = {}
    for trial in trials:
        table_key = (trial.model, trial.task)
        if table_key not in tables:
            task = get_task(trial.config["task"], **trial.config["task_args"])
            tables[table_key] = ResultTable(trial.model, trial.task, task.primary_metric, [], [])
        table = tables[table_key]
        configuration = (trial.arm, trial.schedule, trial.lr)
        row = rows.get((*table_key, *configuration))
        if row is None:
            row = rows[(*table_key, *configuration)] = ConfigurationResult(
                trial.arm, trial.optimizer, trial.schedule, trial.lr, _lr_label(trial), [])
            table.rows.append(row)
        row.trials.append(trial)
        if trial.status == "done":
            scores = {**evaluations.get(trial.key, {}), TRAIN_LOSS: losses.get(trial.key)}
            row.scores[trial.key] = {m: v for m, v in scores.items() if isinstance(v, (int, float))}
    configurations_per_arm: dict[str, int] = {}
    for table in tables.values():
        for row in table.rows:
            row.trials.sort(key=lambda t: t.seed)
        table.metrics = _metric_order(table)
        for arm, count in Counter(row.arm for row in table.rows).items():
            configurations_per_arm[arm] = max(configurations_per_arm.get(arm, 0), count)
    environments = []
    for environment in store.environments().values():
        if environment not in environments:
            environments.append(environment)
    return StudyResults(store.study(), store.counts(), sorted({t.seed for t in trials}), configurations_per_arm,
                        list(tables.values()), environments)


def _metric_order(table: ResultTable) -> list[str]:
    seen = [metric for row in table.rows for metric in row.values]
    scores = [m for m in dict.fromkeys(seen) if m not in COUNT_METRICS and m not in (TRAIN_LOSS, table.primary_metric)]
    counts = [m for m in COUNT_METRICS if m in seen]
    return [table.primary_metric, *scores, *counts, TRAIN_LOSS]


def _lr_label(trial: TrialRow) -> str:
    estimate = trial.stepsize_estimate
    if estimate is None:
        return format_lr(trial.lr)
    unstable = ", above the measured edge of stability" if estimate.get("lr_warning") else ""
    return f"{trial.lr:.3g} (α×{estimate['multiplier']:g}{unstable})"


def summary(results: StudyResults) -> dict[str, Any]:
    """Everything the report shows, as plain data, with each trial's own values beside the means."""
    return {
        "study": results.study.name,
        "spec_hash": results.study.spec_hash,
        "budget": {**results.study.budget, "seeds": results.seeds,
                   "configurations_per_arm": results.configurations_per_arm},
        "trials": results.counts,
        "tables": [
            {
                "model": table.model,
                "task": table.task,
                "primary_metric": table.primary_metric,
                "metrics": table.metrics,
                "rows": [
                    {
                        "arm": row.arm, "optimizer": row.optimizer, "schedule": row.schedule, "lr": row.lr,
                        "lr_label": row.lr_label, "seeds_done": row.seeds_done, "statuses": row.statuses,
                        "mean": {m: row.mean(m) for m in table.metrics},
                        "std": {m: row.std(m) for m in table.metrics},
                        "marks": {m: mark for m in table.ranked_metrics
                                  if (mark := table.marks(m).get(index)) is not None},
                        "trials": [{"key": t.key, "seed": t.seed, "status": t.status, "scores": row.scores.get(t.key),
                                    "stepsize_estimate": t.stepsize_estimate} for t in row.trials],
                    }
                    for index, row in enumerate(table.rows)
                ],
            }
            for table in results.tables
        ],
        "environments": results.environments,
    }


# ---------------------------------------------------------------------------------------------- the published layout


@dataclass
class LayoutRow:
    metric: str
    model: str
    cells: list[ConfigurationResult | None]  # one per column; None where the model did not run that configuration

    def marks(self) -> dict[int, str]:
        """Column index -> "best" or "second" by mean across the configurations."""
        return rank_marks({i: cell.mean(self.metric) for i, cell in enumerate(self.cells) if cell is not None},
                          self.metric)


@dataclass
class PublishedTable:
    """One task in the AdamDDS study's layout (docs/protocols.md §A.8): a row per metric x model, a column per
    configuration (schedules and optimizers side by side), cells mean ± std over seeds."""

    task: str
    columns: list[str]
    rows: list[LayoutRow]


def configuration_column(row: ConfigurationResult) -> tuple[str, str, str]:
    """What makes configurations of different models one column: arm, schedule, and the learning rate, or its
    multiple of α for data-dependent step sizes (α differs per model; its seeds share one estimate)."""
    estimate = row.trials[0].stepsize_estimate
    lr = f"α×{estimate['multiplier']:g}" if estimate is not None else format_lr(row.lr)
    return row.arm, row.schedule, lr


def published_tables(results: StudyResults) -> list[PublishedTable]:
    tables = []
    for task in dict.fromkeys(table.task for table in results.tables):
        per_model = [table for table in results.tables if table.task == task]
        columns: dict[tuple[str, str, str], dict[str, ConfigurationResult]] = {}
        for table in per_model:
            for row in table.rows:
                columns.setdefault(configuration_column(row), {})[table.model] = row
        labels = _column_labels(list(columns))
        metrics = list(dict.fromkeys(m for table in per_model for m in table.ranked_metrics))
        rows = [LayoutRow(metric, table.model, [cells.get(table.model) for cells in columns.values()])
                for metric in metrics for table in per_model if metric in table.metrics]
        tables.append(PublishedTable(task, labels, rows))
    return tables


def _column_labels(columns: list[tuple[str, str, str]]) -> list[str]:
    """The arm's name, with the schedule and learning rate only where the arm has several."""
    labels = []
    for arm, schedule, lr in columns:
        siblings = [c for c in columns if c[0] == arm]
        parts = [arm]
        if len({c[1] for c in siblings}) > 1:
            parts.append(schedule)
        if len({c[2] for c in siblings}) > 1:
            parts.append(lr)
        labels.append(" ".join(parts))
    return labels
