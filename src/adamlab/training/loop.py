"""One trial: fine-tune a model on a task with one optimizer, schedule and seed, evaluate it, record everything.

The loop is plain PyTorch on accelerate (devices, data parallelism, mixed precision, trackers). Choices that
matter for trusting the numbers:

* The loss of an optimizer step is the sum of per-token losses over the whole global batch divided by the number
  of target tokens in it, whatever the micro-batching and process count, so gradient accumulation and data
  parallelism give the gradient of one big batch (not a mean of micro-batch means).
* The example order is a function of (seed, step), and checkpoints hold every RNG, so a run killed and resumed
  ends bit-identical to an uninterrupted one on CPU.
* A non-finite loss stops the run with status ``diverged`` and the step; Ctrl-C checkpoints at the end of the
  current step and stops with status ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..encoding import collate
from ..evaluation import EvalResult, evaluate
from ..models import peak_flops, training_flops_per_token
from ..optim import create_optimizer
from ..schedules import create_scheduler
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import loss_targets, summed_loss
from .lr_source import resolve_lr
from .order import ExampleOrder
from .setup import prepare_trial
from .telemetry import JsonlLog, environment, memory, peak_rss_bytes, progress_bar

# The update norm needs a copy of the trainable weights from before the step: nothing next to LoRA adapters, a second
# model in a full fine-tune. Above this many trainable elements (512 MiB in fp32) it is not recorded (None).
UPDATE_NORM_MAX_ELEMENTS = 1 << 27


class RunMismatchError(ValueError):
    """The output folder holds a different run (or something that is not a run)."""


@dataclass
class TrainResult:
    status: str  # done | diverged | interrupted
    steps_completed: int
    metrics: dict[str, Any]
    out_dir: Path
    record: dict[str, Any]  # the content of result.json


def check_output_dir(config: TrainConfig) -> None:
    """Refuse an output folder that holds another run; reads only, so it is safe before any work."""
    out = config.out_dir
    saved = out / "config.json"
    if saved.exists():
        previous = TrainConfig.from_dict(json.loads(saved.read_text())).identity()
        current = config.identity()
        if previous != current:
            differing = sorted(k for k in current if previous.get(k) != current[k])
            raise RunMismatchError(f"{out} holds a different run (differs in {', '.join(differing)}); "
                                   "use another --out or delete it")
    elif out.exists() and any(out.iterdir()):
        raise RunMismatchError(f"{out} is not empty and holds no adamlab run")


def _optimizer_mode(optimizer, mode: str) -> None:
    """Schedule-free optimizers keep two iterates and must be told which one the model should hold."""
    inner = getattr(optimizer, "optimizer", optimizer)
    switch = getattr(inner, mode, None)
    if callable(switch):
        switch()


def _config_summary(optimizer) -> list[dict[str, Any]]:
    """Each param group's settings as plain JSON for the run record and the store: values JSON lacks (LDAdam's
    decomposition dtype, a torch.dtype) are written as strings."""
    return [json.loads(json.dumps({k: v for k, v in group.items() if k != "params"}, default=str))
            | {"num_params": sum(p.numel() for p in group["params"])} for group in optimizer.param_groups]


class _GracefulStop:
    """Turns the first Ctrl-C into a request to stop at the end of the step; a second one interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(config: TrainConfig, *, show_progress: bool = True) -> TrainResult:
    from accelerate import Accelerator

    config.validate()
    check_output_dir(config)
    out = config.out_dir
    finished = out / "result.json"
    if finished.exists() and json.loads(finished.read_text())["status"] in ("done", "diverged"):
        record = json.loads(finished.read_text())
        return TrainResult(record["status"], record["steps_completed"], record["metrics"], out, record)

    # Everything that can fail on bad input (model, data, optimizer) happens before anything is written.
    inputs = prepare_trial(config)
    task, loaded, encoded = inputs.task, inputs.loaded, inputs.encoded
    model, tokenizer, head = loaded.model, loaded.tokenizer, loaded.head
    eval_examples = task.load("eval", config.eval_source, config.eval_limit)

    # cpu=True without a GPU lets torchrun / `accelerate launch --multi_gpu` processes form a gloo group on CPUs.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=config.trackers or None,
                              project_dir=str(out), cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if not config.quantize_4bit:  # quantized weights are placed at load; the rest moves before the optimizer exists
        model = model.to(accelerator.device)
    if config.batch_size % (world * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} must split evenly over {world} processes x "
                         f"{config.grad_accum} micro-batches")
    # The learning rate from its declared source; an estimate (adam_dds) is made here, on the model on its
    # device, and cached in the run folder so a resumed run reads it back.
    lr, lr_resolution = resolve_lr(config, inputs=inputs, show_progress=show_progress and accelerator.is_main_process)
    optimizer = create_optimizer(config.optimizer, model, lr=lr, **config.split_optimizer_args()[0])
    scheduler = create_scheduler(optimizer, config.schedule, config.steps, config.warmup_steps, **config.schedule_args)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    unwrapped = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    track_update = sum(p.numel() for p in trainable) <= UPDATE_NORM_MAX_ELEMENTS
    # Model FLOPs utilisation on a known GPU, for full-parameter causal LMs (pre-training): LoRA skips most of the
    # backward FLOPs the estimate counts.
    peak = peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
    flops_per_token = (training_flops_per_token(unwrapped, config.max_seq_len)
                       if peak and head == "causal_lm" and config.lora is None else None)

    start_step, elapsed, tokens_seen = 0, 0.0, 0
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, unwrapped, optimizer, scheduler)
        start_step, elapsed, tokens_seen = state["step"], state["elapsed"], state["tokens_seen"]
    resume_step = start_step if checkpoint is not None else None
    step_log = JsonlLog(out / "metrics.jsonl", resume_step) if accelerator.is_main_process else None
    eval_log = JsonlLog(out / "evals.jsonl", resume_step) if accelerator.is_main_process else None
    if config.trackers:
        # Trackers take flat scalars as hyperparameters: nested settings go in as JSON strings.
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                   for k, v in config.identity().items()}
        accelerator.init_trackers("adamlab", config=hparams)

    def run_eval(step: int) -> EvalResult | None:
        result = None
        if accelerator.is_main_process:
            _optimizer_mode(optimizer, "eval")
            result = evaluate(unwrapped, tokenizer, head, task, eval_examples, mode=config.eval_mode,
                              batch_size=config.eval_batch_size, max_seq_len=config.max_seq_len)
            _optimizer_mode(optimizer, "train")
            eval_log.write({"step": step, **result.metrics, "seconds": result.seconds})
            if config.trackers:
                accelerator.log({f"eval/{k}": v for k, v in result.metrics.items()}, step=step)
        accelerator.wait_for_everyone()
        return result

    order = ExampleOrder(len(encoded), config.batch_size, config.seed)
    per_process = config.batch_size // world
    micro = per_process // config.grad_accum
    status, diverged_at = "done", None
    model.train()
    _optimizer_mode(optimizer, "train")
    step = start_step
    end = config.steps if config.stop_at is None else config.stop_at  # the schedule still spans config.steps
    bar = progress_bar(show_progress and accelerator.is_main_process)
    with bar, _GracefulStop() as stop:
        bar_task = bar.add_task(f"{config.optimizer} on {config.task}", total=config.steps, completed=start_step,
                                loss="-", lr="-")
        while step < end:
            started = time.perf_counter()
            batch_examples = [encoded[i] for i in order.batch(step)]
            targets = loss_targets(batch_examples)
            shard = batch_examples[rank * per_process : (rank + 1) * per_process]
            loss_sum = torch.zeros((), device=accelerator.device)
            for k in range(config.grad_accum):
                batch = collate(shard[k * micro : (k + 1) * micro], tokenizer.pad_token_id)
                batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
                sync = contextlib.nullcontext() if k == config.grad_accum - 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    summed = summed_loss(model, batch, head)
                    # DDP averages gradients over processes; scaling by world undoes that, leaving the global sum.
                    accelerator.backward(summed * (world / targets))
                loss_sum += summed.detach()
            loss = (accelerator.reduce(loss_sum, "sum") if world > 1 else loss_sum).item() / targets
            if not math.isfinite(loss):
                status, diverged_at = "diverged", step + 1
                break

            if config.max_grad_norm is not None:
                grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            else:
                grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in trainable])))
            lr = optimizer.param_groups[0]["lr"]
            before = [p.detach().clone() for p in trainable] if track_update else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            update_norm = None
            if before is not None:
                torch._foreach_sub_(before, [p.detach() for p in trainable])
                update_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before))).item()
                del before

            step += 1
            seconds = time.perf_counter() - started
            elapsed += seconds
            step_tokens = sum(len(e.input_ids) for e in batch_examples)
            tokens_seen += step_tokens
            if accelerator.is_main_process:
                record = {"step": step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                          "update_norm": update_norm, "step_seconds": seconds, "tokens_per_second": step_tokens / seconds,
                          "epoch": order.epoch(step), **memory()}
                if flops_per_token:
                    record["mfu"] = flops_per_token * step_tokens / seconds / (peak * world)
                step_log.write(record)
                if config.trackers:
                    accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None}, step=step)
                bar.update(bar_task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                run_eval(step)
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or stop.requested or step == config.stop_at:
                if accelerator.is_main_process:
                    save_checkpoint(out, step, unwrapped, optimizer, scheduler, config.keep_checkpoints,
                                    {"elapsed": elapsed, "tokens_seen": tokens_seen})
                accelerator.wait_for_everyone()
            if stop.requested:
                status = "interrupted"
                break

    if status == "done" and step < config.steps:
        status = "paused"  # at stop_at, checkpointed: the same config with a later stop_at continues from here
    final = run_eval(step) if status in ("done", "paused") else None
    record = {
        "status": status,
        "steps_completed": step,
        "diverged_at_step": diverged_at,
        "metrics": final.metrics if final else {},
        "evaluation": {"mode": final.mode, **final.settings, "seconds": final.seconds} if final else None,
        "config": config.to_dict(),
        "model": loaded.info,
        "optimizer": {"name": config.optimizer, "class": type(getattr(optimizer, "optimizer", optimizer)).__name__,
                      "param_groups": _config_summary(optimizer)},
        "lr": lr_resolution.to_dict(),
        "schedule": {"name": config.schedule, "warmup_steps": config.warmup_steps, **config.schedule_args},
        "data": {"n_train": len(encoded), "n_eval": len(eval_examples),
                 "n_truncated_train": sum(e.truncated for e in encoded)},
        "trainable_parameters": sum(p.numel() for p in trainable),
        "tokens_seen": tokens_seen,
        "wall_seconds": elapsed,
        "peak_memory": {"peak_rss_bytes": peak_rss_bytes(), **({"cuda_peak_bytes": torch.cuda.max_memory_allocated()}
                                                                if torch.cuda.is_available() else {})},
        "processes": world,
        "environment": environment(),
    }
    if accelerator.is_main_process:
        if status == "done":
            _optimizer_mode(optimizer, "eval")
            unwrapped.save_pretrained(out / ("adapter" if config.lora is not None else "model"))
            tokenizer.save_pretrained(out / ("adapter" if config.lora is not None else "model"))
        if final is not None:
            with (out / "predictions.jsonl").open("w") as f:
                for prediction in final.predictions:
                    f.write(json.dumps(prediction) + "\n")
        (out / "result.json").write_text(json.dumps(record, indent=2, default=str))
    if config.trackers:
        accelerator.end_training()
    return TrainResult(status, step, record["metrics"], out, record)
