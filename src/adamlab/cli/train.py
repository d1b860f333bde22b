"""`adamlab train`, `adamlab eval` and `adamlab merge`: one trial, its evaluation, its merged model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .app import app
from .options import bad_input_exits_2, lora_settings, parse_pairs

console = Console()


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def train(
    model: Annotated[str, typer.Option(help="built-in name (minilm, smollm2-135m, tiny-llama, tiny-qwen), folder or hub id")],
    task: Annotated[str, typer.Option(help="a task: ag_news, squad, commonsenseqa, gsm8k, sst2, a GLUE config (cola, mnli, ...), a corpus (c4, wikitext2), or your own .yaml/.jsonl task file")],
    out: Annotated[Path, typer.Option(help="run folder; resumes if it holds a checkpoint of the same run")],
    optimizer: Annotated[str, typer.Option(help="a name from `adamlab optimizers`")] = "adamw",
    lr: Annotated[float | None, typer.Option(help="base learning rate (default 2e-4; none for an optimizer in a "
                                                  "mode that computes its own, e.g. adafactor_hf relative_step=true)")] = None,
    opt: Annotated[list[str] | None, typer.Option(help="optimizer hyperparameter KEY=VALUE (repeatable)")] = None,
    schedule: Annotated[str, typer.Option(help="a name from `adamlab schedules`")] = "constant",
    sched: Annotated[list[str] | None, typer.Option(help="schedule argument KEY=VALUE (repeatable)")] = None,
    warmup: Annotated[float, typer.Option(help="warmup steps, or a ratio in (0, 1) of --steps")] = 0,
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 100,
    batch_size: Annotated[int, typer.Option(help="examples per optimizer step (all processes)")] = 16,
    grad_accum: Annotated[int, typer.Option(help="micro-batches per step on each process")] = 1,
    lr_scaling: Annotated[str | None, typer.Option(help="scale --lr from --base-batch-size to --batch-size: sqrt "
                                                        "(Adam-style) or linear (SGD-style)")] = None,
    base_batch_size: Annotated[int | None, typer.Option(help="the batch size --lr was tuned at (with --lr-scaling)")] = None,
    max_grad_norm: Annotated[float, typer.Option(help="gradient clipping norm; 0 turns clipping off")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    dtype: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 weights")] = "auto",
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16 autocast")] = "no",
    lora: Annotated[str, typer.Option(help="'lora' or 'none' (full fine-tuning)")] = "lora",
    lora_r: Annotated[int, typer.Option()] = 16,
    lora_alpha: Annotated[int, typer.Option()] = 32,
    lora_dropout: Annotated[float, typer.Option()] = 0.05,
    lora_targets: Annotated[list[str] | None, typer.Option(help="module names (default: attention projections)")] = None,
    qlora: Annotated[bool, typer.Option(help="load the base model in 4-bit (CUDA + bitsandbytes)")] = False,
    max_seq_len: Annotated[int, typer.Option()] = 512,
    tokenizer: Annotated[str | None, typer.Option(help="from-scratch models: tokenizer hub id, folder or byte-level")] = None,
    mask_prompt: Annotated[bool, typer.Option(help="train on the answer only")] = True,
    task_option: Annotated[list[str] | None, typer.Option(help="task option KEY=VALUE, e.g. prompt_style=adamdds")] = None,
    train_data: Annotated[str | None, typer.Option(help="local .jsonl or hub dataset id (default: bundled sample)")] = None,
    eval_data: Annotated[str | None, typer.Option(help="local .jsonl or hub dataset id (default: bundled sample)")] = None,
    train_limit: Annotated[int | None, typer.Option(help="a seeded subset of the training data")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="a seeded subset of the evaluation data (default: all)")] = None,
    stream: Annotated[bool, typer.Option(help="pre-training: read and pack the corpus as the steps need it, in corpus "
                                              "order (--train-limit: its first N documents)")] = False,
    eval_every: Annotated[int, typer.Option(help="evaluate every N steps (0: at the end only)")] = 0,
    eval_mode: Annotated[str, typer.Option(help="auto, score (answer choices) or generate")] = "auto",
    eval_batch_size: Annotated[int, typer.Option()] = 16,
    checkpoint_every: Annotated[int, typer.Option(help="checkpoint every N steps (0: never)")] = 50,
    tracker: Annotated[list[str] | None, typer.Option(help="accelerate tracker: tensorboard, mlflow, wandb")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    fused_optimizer: Annotated[bool | None, typer.Option(
        "--fused-optimizer/--no-fused-optimizer", help="compiled optimizer step (default: on for full fine-tunes"
        " of 4M+ parameters where the optimizer has one)")] = None,
) -> None:
    """Fine-tune MODEL on TASK with one optimizer and schedule, then evaluate on every evaluation example."""
    from ..training import TrainConfig
    from ..training import train as run_training
    from ..training.config import DEFAULT_LR

    with bad_input_exits_2():  # RunMismatchError (a folder holding another run) is a ValueError too
        config = TrainConfig(
            model=model, task=task, out=str(out), tokenizer=tokenizer, task_args=parse_pairs(task_option, "--task-option"),
            optimizer=optimizer, lr=lr, optimizer_args=parse_pairs(opt, "--opt"), schedule=schedule,
            schedule_args=parse_pairs(sched, "--sched"), warmup_steps=warmup if 0 < warmup < 1 else int(warmup),
            steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr_scaling=lr_scaling,
            base_batch_size=base_batch_size, max_grad_norm=max_grad_norm or None,
            seed=seed, dtype=dtype, mixed_precision=mixed_precision,
            lora=lora_settings(lora, lora_r, lora_alpha, lora_dropout, lora_targets), quantize_4bit=qlora,
            max_seq_len=max_seq_len, mask_prompt=mask_prompt, train_source=train_data, eval_source=eval_data,
            train_limit=train_limit, eval_limit=eval_limit, eval_every=eval_every, eval_mode=eval_mode,
            eval_batch_size=eval_batch_size, checkpoint_every=checkpoint_every, trackers=tracker or [],
            fused_optimizer=fused_optimizer, stream=stream,
        )
        if lr is None and not config.computes_own_lr:
            config.lr = DEFAULT_LR
        result = run_training(config, show_progress=progress)
    console.print(f"[bold]{result.status}[/] after {result.steps_completed} steps; results in {result.out_dir}")
    if result.metrics:
        _print_metrics(f"{task} evaluation", result.metrics)
    if result.status == "interrupted":
        raise typer.Exit(130)


@app.command("eval")
def evaluate_command(
    run: Annotated[Path | None, typer.Option(help="a run folder from `adamlab train` (its model and adapter)")] = None,
    model: Annotated[str | None, typer.Option(help="evaluate a base model instead of a run")] = None,
    task: Annotated[str | None, typer.Option(help="task (default: the run's)")] = None,
    eval_data: Annotated[str | None, typer.Option(help="default: the run's evaluation data")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="default: the run's, else every example")] = None,
    eval_mode: Annotated[str, typer.Option(help="auto, score or generate")] = "auto",
    batch_size: Annotated[int, typer.Option()] = 16,
    max_seq_len: Annotated[int | None, typer.Option(help="default: the run's, else 512")] = None,
    task_option: Annotated[list[str] | None, typer.Option(help="task option KEY=VALUE")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write metrics and predictions here")] = None,
) -> None:
    """Evaluate a trained run or a base model on every example of a task."""
    from ..evaluation import evaluate
    from ..models import load_model
    from ..tasks import get_task

    with bad_input_exits_2():
        if (run is None) == (model is None):
            raise ValueError("give exactly one of --run or --model")
        task_args = parse_pairs(task_option, "--task-option")
        tokenizer = None
        if run is not None:
            config_file = run / "config.json"
            if not config_file.is_file():
                raise FileNotFoundError(f"{run} is not a run folder (no config.json)")
            saved = json.loads(config_file.read_text())
            model, task, tokenizer = saved["model"], task or saved["task"], saved.get("tokenizer")
            if task == saved["task"]:  # the run's own evaluation unless told otherwise
                task_args = task_args or saved["task_args"]
                eval_data = eval_data or saved["eval_source"]
                eval_limit = eval_limit or saved["eval_limit"]
                max_seq_len = max_seq_len or saved["max_seq_len"]
        if task is None:
            raise ValueError("--task is required with --model")
        task_obj = get_task(task, **task_args)
        loaded = load_model(model, num_labels=task_obj.num_labels, tokenizer=tokenizer)
        if run is not None:
            loaded.model = _with_trained_weights(loaded.model, run)
        examples = task_obj.load("eval", eval_data, eval_limit)
        result = evaluate(loaded.model, loaded.tokenizer, loaded.head, task_obj, examples, mode=eval_mode,
                          batch_size=batch_size, max_seq_len=max_seq_len or 512)
    _print_metrics(f"{task_obj.name} ({result.mode}, {len(examples)} examples)", result.metrics)
    if json_out is not None:
        json_out.write_text(json.dumps({"metrics": result.metrics, "mode": result.mode, "settings": result.settings,
                                        "predictions": result.predictions}, indent=2))


def _with_trained_weights(base, run: Path):
    if (run / "adapter").is_dir():
        from peft import PeftModel

        return PeftModel.from_pretrained(base, run / "adapter")
    if (run / "model").is_dir():
        return type(base).from_pretrained(run / "model")
    raise FileNotFoundError(f"{run} holds no trained weights (no adapter/ or model/): has the run finished?")


@app.command()
def merge(
    run: Annotated[Path, typer.Option(help="a LoRA run folder from `adamlab train`")],
    out: Annotated[Path, typer.Option(help="where to write the merged Hugging Face model")],
) -> None:
    """Fold a run's LoRA adapter into its base model and save a plain Hugging Face model folder."""
    from ..models import load_model, merge_lora
    from ..tasks import get_task

    with bad_input_exits_2():
        config_file = run / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{run} is not a run folder (no config.json)")
        if not (run / "adapter").is_dir():
            raise FileNotFoundError(f"{run} holds no LoRA adapter to merge")
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"{out} is not empty")
        saved = json.loads(config_file.read_text())
        task = get_task(saved["task"], **saved.get("task_args", {}))
        loaded = load_model(saved["model"], num_labels=task.num_labels)
        merged = merge_lora(_with_trained_weights(loaded.model, run), out, loaded.tokenizer)
    console.print(f"merged model written to {merged}")
