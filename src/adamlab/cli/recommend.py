"""`adamlab recommend`: which optimizer, learning rate and schedule, chosen on a dev split, with the evidence."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import bad_input_exits_2
from .study import console


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@app.command()
def recommend(
    spec: Annotated[Path | None, typer.Argument(help="a study spec with `mode: recommend`: a file, or a bundled name (recommend_demo); instead of the flags")] = None,
    out: Annotated[Path, typer.Option(help="the recommendation folder (run again to continue)")] = Path("recommendation"),
    model: Annotated[str | None, typer.Option(help="model: built-in name, hub id or folder")] = None,
    task: Annotated[str | None, typer.Option(help="a task with answer choices: ag_news, sst2, commonsenseqa")] = None,
    steps: Annotated[int | None, typer.Option(help="the training horizon every schedule spans")] = None,
    optimizers: Annotated[str | None, typer.Option(help="comma-separated; must include adamw (the baseline)")] = None,
    schedules: Annotated[str | None, typer.Option(help="comma-separated schedule names")] = None,
    budget: Annotated[float | None, typer.Option(help="share of the full grid's trial-steps (default 0.25)")] = None,
    budget_steps: Annotated[int | None, typer.Option(help="the budget in trial-steps instead")] = None,
    seeds: Annotated[int, typer.Option(help="seeds of each finalist and of the baseline")] = 3,
    dev_fraction: Annotated[float, typer.Option(help="share of the training data carved out as dev")] = 0.1,
    eta: Annotated[int, typer.Option(help="successive halving keeps the top 1/eta at each rung")] = 3,
    seed: Annotated[int, typer.Option(help="the study seed: dev split, search runs, bootstrap")] = 0,
    lr_centre: Annotated[str, typer.Option(
        help="centre of each optimizer's lr candidates: family (its known-good default) or suggest (adamlab's "
             "suggestion, estimated on the training data)")] = "family",
    batch_size: Annotated[int, typer.Option()] = 16,
    max_seq_len: Annotated[int, typer.Option()] = 512,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (alpha = 2r)")] = 16,
    warmup_steps: Annotated[float, typer.Option(help="steps, or a ratio of the horizon when below 1")] = 0,
    train_data: Annotated[str | None, typer.Option(help="training data (JSONL or hub id); dev is carved from it")] = None,
    test_data: Annotated[str | None, typer.Option(help="test data (default: the task's evaluation split)")] = None,
    test_limit: Annotated[int | None, typer.Option(help="score a fixed sample of this many test examples")] = None,
    executor: Annotated[str, typer.Option(help="local or ray (each rung's trials as Ray tasks)")] = "local",
    workers: Annotated[int | None, typer.Option(help="trials at once")] = None,
    address: Annotated[str | None, typer.Option(help="the Ray cluster (ray executor)")] = None,
) -> None:
    """Search optimizers x learning rates x schedules by successive halving on a dev split, confirm the finalists
    with more seeds, and print which to use, with confidence intervals, the test score and the cost."""
    from ..reports.verdict import write_verdict_report
    from ..studies.recommend import NothingToRecommend, RecommendSettings, load_recommend_spec, verdict_line
    from ..studies.recommend import recommend as run_recommend
    from ..training.lr_source import format_lr

    with bad_input_exits_2():
        if spec is not None:
            if any(value is not None for value in (model, task, steps, optimizers, schedules, budget, budget_steps)):
                raise ValueError("give either a spec or --model/--task/--steps/... flags, not both")
            settings = load_recommend_spec(spec, out)
            settings.executor, settings.workers, settings.address = executor, workers, address
        else:
            if model is None or task is None or steps is None:
                raise ValueError("give a spec, or --model, --task and --steps")
            settings = RecommendSettings(
                model=model, task=task, steps=steps, out=str(out), seeds=seeds, dev_fraction=dev_fraction, eta=eta,
                seed=seed, lr_centre=lr_centre, budget=None if budget_steps is not None else (budget or 0.25), budget_steps=budget_steps,
                train_source=train_data, test_source=test_data, test_limit=test_limit, executor=executor,
                workers=workers, address=address,
                train_args={"batch_size": batch_size, "max_seq_len": max_seq_len, "warmup_steps": warmup_steps if 0 < warmup_steps < 1 else int(warmup_steps),
                            "lora": {"r": lora_r, "alpha": 2 * lora_r}},
            )
            if optimizers is not None:
                settings.optimizers = _names(optimizers)
            if schedules is not None:
                settings.schedules = _names(schedules)
        settings.validate()
        try:
            result = run_recommend(settings, log=lambda message: console.print(message, soft_wrap=True, markup=False))
        except NothingToRecommend as error:
            print(f"no recommendation: {error}", file=sys.stderr)
            raise typer.Exit(1) from None
        written = write_verdict_report(out)
    console.print(f"\n[bold]{verdict_line(result)}[/]", soft_wrap=True)
    console.print("\nHow to use it:", soft_wrap=True)
    for where, how in result["use_it"].items():
        console.print(f"  {where}: {how}", soft_wrap=True, markup=False)
    for excluded in result["excluded"]:
        config = excluded["config"]
        console.print(f"  excluded: {config['optimizer']} lr {format_lr(config['lr'])} {config['schedule']}: "
                      f"{excluded['reason']}", soft_wrap=True, markup=False)
    console.print(f"recommendation: {out / 'recommendation.json'}\nreport: {written.markdown}\nhtml report: "
                  f"{written.html}", soft_wrap=True)
