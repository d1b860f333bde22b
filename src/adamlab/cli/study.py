"""`adamlab sweep`, `status`, `report` and `validate`: run a study, watch it, report it, check a spec."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .app import app
from .options import bad_input_exits_2

# Off a terminal (CI logs, pipes) rich assumes 80 columns and would cut table headers and numbers short; tables are
# printed at their natural width there instead, up to LOG_WIDTH (COLUMNS, when set, still wins).
LOG_WIDTH = 240
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else LOG_WIDTH)


def _primary_score(trial, metrics: dict) -> str:
    from ..tasks import get_task

    metric = get_task(trial.config["task"], **trial.config["task_args"]).primary_metric
    value = metrics.get(metric)
    return f"{metric} {value:.4f}" if isinstance(value, float) else ""


def _describe(trial) -> str:
    from ..training.lr_source import format_lr

    return (f"{trial.model} · {trial.task} · {trial.arm} · {trial.schedule} · lr {format_lr(trial.lr)} · "
            f"seed {trial.seed} [dim]{trial.key}[/]")


def _print_tables(report) -> None:
    from ..reports import rich_table

    for table in report.results.tables:
        console.print(rich_table(table))
    console.print(f"report: {report.markdown}", soft_wrap=True)
    console.print(f"html report: {report.html}", soft_wrap=True)


@app.command()
def sweep(
    study: Annotated[Path, typer.Argument(help="a study spec (YAML file), or a bundled study by name (`adamlab studies`)")],
    out: Annotated[Path | None, typer.Option(help="study folder (default: studies/runs/<name>)")] = None,
    executor: Annotated[str, typer.Option(
        help="where trials run: local (this machine: one at a time, or one per GPU) or ray (a Ray cluster)")] = "local",
    address: Annotated[str | None, typer.Option(
        help="the Ray cluster to run on (ray executor; default: start one on this machine)")] = None,
    workers: Annotated[int | None, typer.Option(
        help="trials at once (default: one per visible GPU, or as many as the Ray cluster can run)")] = None,
    retry_failed: Annotated[bool, typer.Option(help="run failed trials again")] = False,
    progress: Annotated[bool, typer.Option(help="show each trial's progress bar")] = True,
) -> None:
    """Run every trial of a study, then write its report. Running it again continues where it stopped: finished
    trials are skipped and interrupted ones resume from their last checkpoint."""
    from ..reports import write_report
    from ..studies import SweepListener
    from ..studies import sweep as run_sweep
    from ..studies.store import FINISHED

    class Printer(SweepListener):
        def sweep_started(self, study_dir, counts) -> None:
            to_run = counts["queued"] + counts["running"]
            console.print(f"[bold]{sum(counts.values())} trials[/], {to_run} to run, in {study_dir}", soft_wrap=True)

        def trial_started(self, trial) -> None:
            console.print(f"[bold]run[/]  {_describe(trial)}", soft_wrap=True)

        def trial_finished(self, trial, outcome) -> None:
            colour = {"done": "green", "diverged": "yellow", "failed": "red"}.get(outcome.status, "blue")
            score = _primary_score(trial, outcome.evaluations[-1]) if outcome.evaluations else ""
            detail = outcome.error or score
            console.print(f"[{colour}]{outcome.status}[/] {_describe(trial)}  {detail}  "
                          f"({outcome.wall_seconds:.1f} s)", soft_wrap=True)

    # Schedulers send SIGTERM before SIGKILL: stop as on Ctrl-C (running trials checkpoint and go back to the queue).
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    with bad_input_exits_2():
        try:
            result = run_sweep(study, out, executor=executor, workers=workers, address=address, listener=Printer(),
                               show_progress=progress, retry_failed=retry_failed)
        except KeyboardInterrupt:  # between trials, or a second Ctrl-C inside one
            result = None
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if result is None or not result.completed:
            console.print("[yellow]stopped[/]: run the same command again to continue")
            raise typer.Exit(130)
        report = write_report(result.study_dir)
    console.print("trials: " + ", ".join(f"{n} {status}" for status, n in result.counts.items() if n))
    _print_tables(report)
    failed = result.counts["failed"]
    if failed:
        console.print(f"[red]{failed} trial{'s' if failed > 1 else ''} failed[/]: `adamlab status {result.study_dir}` "
                      "says why; once fixed, run the same sweep with --retry-failed", soft_wrap=True)
    if failed and not any(result.counts[status] for status in FINISHED):
        raise typer.Exit(1)  # nothing finished: a script or scheduler must not take this for a result


@app.command()
def status(study_dir: Annotated[Path, typer.Argument(help="a study folder (from `adamlab sweep`)")]) -> None:
    """How far a study is: trials by status, then one line per trial."""
    from ..studies.store import STALE_AFTER_SECONDS, Store, is_abandoned
    from ..studies.trials import KEY_LENGTH
    from ..training.lr_source import format_lr

    with bad_input_exits_2():
        store = Store.open(study_dir, read_only=True)
        try:
            study, counts, trials, finals = store.study(), store.counts(), store.trials(), store.final_evaluations()
        finally:
            store.close()
    console.print(f"[bold]{study.name}[/] in {study_dir}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
                  soft_wrap=True)
    table = Table(title_justify="left")
    table.add_column("key", no_wrap=True, min_width=KEY_LENGTH)  # whole: it names the trial's folder
    for column in ("model", "task", "arm", "schedule", "lr", "seed", "status", "attempts", "steps", "wall s", "result"):
        table.add_column(column, justify="right" if column in ("lr", "seed", "attempts", "steps", "wall s") else "left")
    now = time.time()
    for trial in trials:
        if trial.status == "running":
            abandoned = is_abandoned(trial.owner, trial.heartbeat, now, STALE_AFTER_SECONDS)
            note = "abandoned: the next sweep resumes it" if abandoned else f"by {trial.owner}"
        elif trial.status == "failed":
            note = trial.error or ""
        else:
            note = _primary_score(trial, finals.get(trial.key, {}))
        table.add_row(trial.key, trial.model, trial.task, trial.arm, trial.schedule, format_lr(trial.lr),
                      str(trial.seed),
                      trial.status, str(trial.attempts), "" if trial.steps_completed is None else str(trial.steps_completed),
                      "" if trial.wall_seconds is None else f"{trial.wall_seconds:.1f}", note)
    console.print(table)


@app.command()
def report(study_dir: Annotated[Path, typer.Argument(help="a study folder (from `adamlab sweep`)")]) -> None:
    """Write STUDY_DIR/report/ (report.md, tables as .tex and .csv, summary.json) from the results store; for a
    recommendation folder (from `adamlab recommend`), its verdict report."""
    from ..reports import write_report
    from ..reports.verdict import write_verdict_report
    from ..studies.recommend import RESULT_FILE

    with bad_input_exits_2():
        if (study_dir / RESULT_FILE).is_file():
            verdict = write_verdict_report(study_dir)
            console.print(f"report: {verdict.markdown}\nhtml report: {verdict.html}", soft_wrap=True)
            return
        written = write_report(study_dir)
    _print_tables(written)


@app.command()
def validate(
    study: Annotated[Path, typer.Argument(help="a study spec (YAML file), or a bundled study by name (`adamlab studies`)")],
) -> None:
    """Check a study spec and every trial it expands to, without running anything (no model is loaded: learning-rate
    estimates not made yet are listed, to be made at the start of the sweep)."""
    from ..studies import default_study_dir, expand_trials, load_spec
    from ..studies.trials import ESTIMATES_FOLDER, PENDING

    with bad_input_exits_2():
        spec = load_spec(study)
        study_dir = default_study_dir(spec)
        trials = expand_trials(spec, study_dir, estimates=study_dir / ESTIMATES_FOLDER, run_estimates=False)
    configurations = sum(arm.configurations for arm in spec.arms)
    console.print(f"{study}: ok, {len(trials)} trials = {len(spec.models)} models x {len(spec.tasks)} tasks x "
                  f"{configurations} configurations ({len(spec.arms)} arms) x {len(spec.seeds)} seeds", soft_wrap=True)
    estimates = {}  # one line per estimate: dds is per model and task, the other methods per optimizer too
    for t in trials:
        if t.stepsize_estimate is not None:
            method = t.stepsize_estimate.get("lr_method", "dds")
            estimates[(t.model, t.task, method, None if method == "dds" else t.optimizer)] = t.stepsize_estimate
    for (model, task, method, optimizer), estimate in estimates.items():
        about = f"dds step size for {model} on {task}" if method == "dds" else \
            f"{method} learning rate for {model} on {task} ({optimizer})"
        if estimate["source"] == PENDING:
            console.print(f"{about}: to be estimated when the sweep starts", soft_wrap=True)
        else:
            console.print(f"{about}: α = {estimate['alpha']:.4g} ({estimate['source']})", soft_wrap=True)
