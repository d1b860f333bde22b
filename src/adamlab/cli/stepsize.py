"""`adamlab lr`: a planned run's learning rate from a learning-rate method (the AdamDDS step size by default, the
range test, adamlab's suggestion), through the one resolver every command uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..stepsize import RangeTestResult, StepsizeEstimate, by_lora_matrix
from ..stepsize.presets import FROM_PRESET, estimator_settings
from ..stepsize.spectral import METHODS
from ..training import TrainConfig
from ..stepsize.suggest import SUGGESTION_METHODS, LRSuggestion
from ..training.lr_source import LR_METHODS, LRSource, resolve_lr, stability_warning
from .app import app
from .options import bad_input_exits_2, lora_settings, parse_pairs

console = Console()
RANGE_TESTS = ("range-test", "range-test-min10")


def parse_horizon(text: str) -> str | int:
    """``steps``, ``one`` or a positive integer."""
    if text in ("steps", "one"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"--horizon must be 'steps', 'one' or an integer >= 1, got {text!r}")


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
    method: Annotated[str | None, typer.Option(help="dds (default), suggest, aeos, dds-one, dds-warm, range-test, range-test-min10; or dds with the spectral method power, power_h2 or lanczos")] = None,
    optimizer: Annotated[str, typer.Option(help="the planned run's optimizer (suggest, aeos, range tests)")] = "adam",
    opt: Annotated[list[str] | None, typer.Option(help="optimizer hyperparameter KEY=VALUE (repeatable)")] = None,
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
    stability_check: Annotated[bool, typer.Option(help="warn when the lr is above where training became unstable (dds: measures the AEoS bound too)")] = True,
) -> None:
    """The learning rate of a planned run of MODEL on TASK from a learning-rate method: by default the AdamDDS
    constant step size alpha = sqrt(2 (L0 - L*) / (K T)), with K from the Hessian's spectral norm at the start of
    training; or Smith's range test (--method range-test), or adamlab's suggestion (--method suggest)."""
    with bad_input_exits_2():
        _check_output(json_out)
        lr_name, spectral = ("dds", method) if method in METHODS else (method or "dds", None)
        if lr_name not in LR_METHODS:
            raise ValueError(f"unknown --method {method!r}; valid: {', '.join([*LR_METHODS, *METHODS])}")
        chosen = {"horizon": parse_horizon(horizon) if horizon is not None else None, "n_examples": samples,
                  "batch_size": batch_size, "method": spectral, "max_iter": max_iter, "rtol": rtol,
                  "n_inits": n_inits, "aggregate": aggregate}
        chosen = {name: value for name, value in chosen.items() if value is not None}
        if lr_name == "dds":  # the settings, checked before the model is loaded
            settings = estimator_settings(preset, **chosen)
            if settings["horizon"] == "steps" and steps is None:
                raise ValueError("horizon 'steps' needs --steps, the planned run's optimizer steps (or give "
                                 "--horizon <int> or --horizon one)")
            options = {"total_steps": steps, "preset": preset, "batch_size": chosen.pop("batch_size", FROM_PRESET),
                       "samples": chosen.pop("n_examples", FROM_PRESET), "loss_floor": loss_floor, "hvp": hvp,
                       "groups": by_lora_matrix if per_group else None, **chosen}
        else:
            options = {"min_lr": min_lr, "max_lr": max_lr, "num_steps": range_steps} if lr_name in RANGE_TESTS else {}
            if steps is None and isinstance(chosen.get("horizon"), int):
                steps = chosen["horizon"]  # the run's steps: what the learning rate is made for
        # The run these settings plan: same seed, w0, data, encoding and optimizer.
        config = TrainConfig(
            model=model, task=task, task_args=parse_pairs(task_option, "--task-option"), seed=seed, dtype=dtype,
            optimizer=optimizer, optimizer_args=parse_pairs(opt, "--opt"), batch_size=batch_size or 16,
            steps=steps or 1, lora=lora_settings(lora, lora_r, lora_alpha, lora_dropout, lora_targets),
            max_seq_len=max_seq_len, mask_prompt=mask_prompt, train_source=train_data, train_limit=train_limit,
        )
        lr, resolution = resolve_lr(config, LRSource(lr_name), show_progress=progress, options=options)
        warning = stability_warning(config, lr, resolution, show_progress=progress) if stability_check else None
    # The suggestion holds for the planned run's batch size; another batch size needs --lr-scaling on train.
    record = resolution.record
    console.print(f"for a run at batch size {config.batch_size}")
    if "alpha" in record:  # dds, dds-one: the AdamDDS estimate record
        _print_estimate(StepsizeEstimate.from_dict(record))
    elif lr_name in RANGE_TESTS:
        _print_range_test(RangeTestResult(**{k: v for k, v in record.items() if k != "method"}), lr_name)
    else:
        _print_suggestion(LRSuggestion.from_dict(record))
    if warning:
        console.print(f"[bold red]{warning}[/]")
    if json_out is not None:
        if "alpha" in record:  # the AdamDDS estimate record, which `adam_dds --opt estimate=FILE` reads back
            context = {"method": lr_name, "optimizer": config.optimizer, "lr": lr, "horizon": config.steps,
                       "planned_batch_size": config.batch_size, "cost_seconds": resolution.cost_seconds,
                       "warning": warning,
                       "diagnostics": {key: record[key] for key in ("L0", "K_hat", "alpha_interval") if key in record}}
            json_out.write_text(json.dumps({**context, "estimate": record}, indent=2))
        else:
            json_out.write_text(json.dumps(_lr_record(record, lr_name, config, resolution.cost_seconds, warning),
                                           indent=2))
        console.print(f"record written to {json_out}")


def _lr_record(record: dict, method: str, config: TrainConfig, cost_seconds: float, warning: str | None) -> dict:
    """One layout for every method but dds: the lr, what it was made for, its cost and the method's diagnostics."""
    if "diagnostics" in record:  # already an adamlab.stepsize.suggest record
        return {**record, "method": method, "planned_batch_size": config.batch_size, "warning": warning}
    return {"method": method, "optimizer": config.optimizer, "lr": record["suggested_lr"], "horizon": config.steps,
            "batch_size": config.batch_size, "planned_batch_size": config.batch_size,
            "cost_seconds": cost_seconds or record["wall_time_s"], "warning": warning, "diagnostics": record}


def _print_suggestion(suggestion: LRSuggestion) -> None:
    table = Table(title=f"learning rate ({suggestion.method}: {SUGGESTION_METHODS[suggestion.method]})",
                  title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    diagnostics = suggestion.diagnostics
    rows = [("lr", f"{suggestion.lr:.4e}"), ("optimizer", suggestion.optimizer),
            ("made for", f"{suggestion.horizon} steps of {suggestion.batch_size}"),
            ("cost", f"{suggestion.cost_seconds:.1f} s")]
    if "fraction" in diagnostics:
        rows.append(("share of eta_max", f"{diagnostics['fraction']:g} ({diagnostics['start']})"))
    if "eta_max" in diagnostics:
        rows += [("eta_max (edge of stability)", f"{diagnostics['eta_max']:.4e}"),
                 ("lambda_max(P^-1 H) per batch", ", ".join(f"{v:.4g}" for v in diagnostics["batch_sharpness"])),
                 ("preconditioner / momentum", f"{diagnostics['preconditioner']} / {diagnostics['momentum']} "
                                               f"beta {diagnostics['beta']:g}"),
                 ("warm-up", f"{diagnostics['warmup_steps']} steps at {diagnostics['warmup_lr']:g}")]
    if "K_warm" in diagnostics:
        rows += [("K after warm-up", f"{diagnostics['K_warm']:.6g}"), ("L0 at w0", f"{diagnostics['L0']:.6g}")]
    for row in rows:
        table.add_row(*row)
    console.print(table)


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


def _print_range_test(result, method: str) -> None:
    title = "learning-rate range test" if method == "range-test" else f"learning rate ({method}: the range test's point)"
    table = Table(title=title, title_justify="left")
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
