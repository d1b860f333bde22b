"""`adamlab lr`: the AdamDDS step size of a model on a task's training data, or the learning-rate range test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .app import app
from .options import bad_input_exits_2, lora_settings, parse_pairs

console = Console()
RANGE_TEST = "range-test"


def parse_horizon(text: str) -> str | int:
    """``steps``, ``one`` or a positive integer."""
    if text in ("steps", "one"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"--horizon must be 'steps', 'one' or an integer >= 1, got {text!r}")


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled)


def _check_output(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"--json {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--json: folder {path.parent} does not exist")


@app.command("lr")
def lr_command(
    model: Annotated[str, typer.Option(help="built-in name (minilm, smollm2-135m, tiny-llama, tiny-qwen), folder or hub id")],
    task: Annotated[str, typer.Option(help="ag_news, squad, commonsenseqa, gsm8k or sst2")],
    preset: Annotated[str, typer.Option(help="default, authors_llm or paper_alg2; options below override it")] = "default",
    method: Annotated[str | None, typer.Option(help="power, power_h2, lanczos, or range-test (Smith's LR range test)")] = None,
    samples: Annotated[int | None, typer.Option(help="examples in the estimation sample (default: the preset's)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="examples per loss (default: the preset's, 16; 1 = per example)")] = None,
    horizon: Annotated[str | None, typer.Option(help="T: 'steps' (= --steps), 'one' (the authors' LLM code) or an integer")] = None,
    steps: Annotated[int | None, typer.Option(help="optimizer steps of the planned run (for --horizon steps)")] = None,
    loss_floor: Annotated[float, typer.Option(help="L*, the loss's infimum")] = 0.0,
    aggregate: Annotated[str | None, typer.Option(help="max, mean or quantile:<q> over batches")] = None,
    max_iter: Annotated[int | None, typer.Option(help="iterations per batch")] = None,
    rtol: Annotated[float | None, typer.Option(help="relative tolerance on the spectral norm")] = None,
    n_inits: Annotated[int | None, typer.Option(help="initialisations (the paper's Algorithm 2 takes the max)")] = None,
    hvp: Annotated[str, typer.Option(help="Hessian-vector products: auto, double_backward or jvp")] = "auto",
    per_group: Annotated[bool, typer.Option(help="also one step size for LoRA A, LoRA B and the rest")] = False,
    seed: Annotated[int, typer.Option(help="the training seed: it fixes w0 (LoRA's init) and the sample")] = 0,
    dtype: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 weights")] = "auto",
    lora: Annotated[str, typer.Option(help="'lora' or 'none' (full fine-tuning)")] = "lora",
    lora_r: Annotated[int, typer.Option()] = 16,
    lora_alpha: Annotated[int, typer.Option()] = 32,
    lora_dropout: Annotated[float, typer.Option()] = 0.05,
    lora_targets: Annotated[list[str] | None, typer.Option(help="module names (default: attention projections)")] = None,
    max_seq_len: Annotated[int, typer.Option()] = 512,
    mask_prompt: Annotated[bool, typer.Option(help="loss on the answer only, as in training")] = True,
    task_option: Annotated[list[str] | None, typer.Option(help="task option KEY=VALUE, e.g. prompt_style=adamdds")] = None,
    train_data: Annotated[str | None, typer.Option(help="local .jsonl or hub dataset id (default: bundled sample)")] = None,
    train_limit: Annotated[int | None, typer.Option(help="the seeded training subset the run uses")] = None,
    min_lr: Annotated[float, typer.Option(help="range test: first learning rate")] = 1e-7,
    max_lr: Annotated[float, typer.Option(help="range test: last learning rate")] = 1.0,
    range_steps: Annotated[int, typer.Option(help="range test: steps")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full record here")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """The AdamDDS constant step size alpha = sqrt(2 (L0 - L*) / (K T)) of MODEL on TASK, with K from the Hessian's
    spectral norm at the start of training; or, with --method range-test, the learning-rate range test."""
    from ..stepsize import (
        FROM_PRESET,
        METHODS,
        by_lora_matrix,
        estimate_for_training,
        estimator_settings,
        lr_range_test,
        training_loss,
    )
    from ..training import TrainConfig
    from ..training.setup import prepare_trial

    with bad_input_exits_2():
        _check_output(json_out)
        if method is not None and method not in (*METHODS, RANGE_TEST):
            raise ValueError(f"unknown --method {method!r}; valid: {', '.join((*METHODS, RANGE_TEST))}")
        chosen = {"horizon": parse_horizon(horizon) if horizon is not None else None, "n_examples": samples,
                  "batch_size": batch_size, "method": method, "max_iter": max_iter, "rtol": rtol,
                  "n_inits": n_inits, "aggregate": aggregate}
        chosen = {name: value for name, value in chosen.items() if value is not None}
        if method != RANGE_TEST:  # the settings, checked before the model is loaded
            settings = estimator_settings(preset, **chosen)
            if settings["horizon"] == "steps" and steps is None:
                raise ValueError("horizon 'steps' needs --steps, the planned run's optimizer steps (or give "
                                 "--horizon <int> or --horizon one)")
        # The trial a run with these settings would start from: same seed, w0, data and encoding.
        inputs = prepare_trial(TrainConfig(
            model=model, task=task, out="", task_args=parse_pairs(task_option, "--task-option"), seed=seed,
            dtype=dtype, lora=lora_settings(lora, lora_r, lora_alpha, lora_dropout, lora_targets), max_seq_len=max_seq_len,
            mask_prompt=mask_prompt, train_source=train_data, train_limit=train_limit,
        ))
        task_obj, loaded, encoded = inputs.task, inputs.loaded, inputs.encoded
        pad_id = loaded.tokenizer.pad_token_id

        if method == RANGE_TEST:
            device = next(loaded.model.parameters()).device
            with _progress(progress) as bar:
                bar_task = bar.add_task(f"LR range test on {task_obj.name}", total=range_steps)
                result = lr_range_test(loaded.model, training_loss(loaded.head, pad_id, device), encoded,
                                       min_lr=min_lr, max_lr=max_lr, num_steps=range_steps,
                                       batch_size=batch_size or 16, seed=seed,
                                       progress=lambda done, total: bar.update(bar_task, completed=done))
            _print_range_test(result)
        else:
            with _progress(progress) as bar:
                bar_task = bar.add_task(f"Hessian spectral norm on {task_obj.name}", total=None)
                result = estimate_for_training(
                    loaded.model, loaded.head, encoded, pad_id, total_steps=steps, seed=seed, preset=preset,
                    batch_size=chosen.pop("batch_size", FROM_PRESET), samples=chosen.pop("n_examples", FROM_PRESET),
                    loss_floor=loss_floor, hvp=hvp, groups=by_lora_matrix if per_group else None, model_id=model,
                    adapter_config=loaded.info.get("lora"),
                    progress=lambda done, total: bar.update(bar_task, completed=done, total=total), **chosen,
                )
            _print_estimate(result)
    if json_out is not None:
        result.save(json_out)
        console.print(f"record written to {json_out}")


def _print_estimate(estimate) -> None:
    table = Table(title=f"AdamDDS step size ({estimate.preset} preset)", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    low, high = estimate.alpha_interval or (float("nan"), float("nan"))
    rows = [
        ("alpha", f"{estimate.alpha:.4e}"),
        (f"{estimate.confidence:.0%} interval (bootstrap over batches)", f"[{low:.4e}, {high:.4e}]"),
        *((f"alpha x {m}", f"{a:.4e}") for m, a in estimate.multipliers().items() if m != "1"),
        (f"K ({estimate.aggregate} of per-batch spectral norms)", f"{estimate.K:.6g}"),
        (f"L0 ({estimate.l0_reduction}, used)", f"{estimate.L0:.6g}"),
        ("L0 token mean / per-example mean", f"{estimate.L0_token_mean:.6g} / {estimate.L0_per_example_mean:.6g}"),
        ("T", f"{estimate.T} ({estimate.horizon_mode})"),
        ("examples used (excluded)", f"{estimate.n_examples_used} ({estimate.n_excluded})"),
        ("batch size x batches x inits", f"{estimate.batch_size} x {len(estimate.records['batch_loss'])} x "
                                         f"{estimate.n_inits}"),
        ("method / HVP engine", f"{estimate.method} / {estimate.hvp_engine}"),
        ("HVPs / converged", f"{estimate.hvp_count} / {estimate.converged_fraction:.0%}"),
        ("wall time", f"{estimate.wall_time_s:.1f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)

    distribution = Table(title="per-batch Hessian spectral norm (sigma) and Rayleigh quotient", title_justify="left")
    distribution.add_column("")
    for name in estimate.sigma_quantiles:
        distribution.add_column(name, justify="right")
    distribution.add_row("sigma", *(f"{v:.5g}" for v in estimate.sigma_quantiles.values()))
    distribution.add_row("lambda", *(f"{v:.5g}" for v in estimate.lambda_quantiles.values()))
    console.print(distribution)
    if estimate.groups:
        groups = Table(title="per-group step sizes (Hessian blocks)", title_justify="left")
        for column in ("group", "parameters", "K", "alpha"):
            groups.add_column(column, justify="left" if column == "group" else "right")
        for label, group in estimate.groups.items():
            alpha = f"{group.alpha:.4e}" if group.alpha is not None else "none (K = 0)"
            groups.add_row(label, str(group.n_params), f"{group.K:.6g}", alpha)
        console.print(groups)


def _print_range_test(result) -> None:
    table = Table(title="learning-rate range test", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row(f"suggested lr ({result.rule})", f"{result.suggested_lr:.4e}")
    table.add_row("lr at the smoothed minimum", f"{result.lr_at_min_loss:.4e}")
    table.add_row("smoothed minimum loss", f"{result.min_smoothed_loss:.6g}")
    table.add_row("steps run", f"{len(result.losses)} of {result.num_steps}"
                  + (" (stopped: loss diverged)" if result.stopped_early else ""))
    console.print(table)
    curve = Table(title="smoothed loss against learning rate", title_justify="left")
    curve.add_column("lr", justify="right")
    curve.add_column("smoothed loss", justify="right")
    stride = max(1, len(result.smoothed_losses) // 10)
    for lr, loss in list(zip(result.lrs, result.smoothed_losses))[::stride]:
        curve.add_row(f"{lr:.3e}", f"{loss:.5g}")
    console.print(curve)
