"""One trial: fine-tune a model on a task with one optimizer, schedule and seed, evaluate it, record everything.

The loop is plain PyTorch on accelerate (devices, data parallelism, mixed precision, trackers). Choices that
matter for trusting the numbers:

* The loss of an optimizer step is the sum of per-token losses over the whole global batch divided by the number
  of target tokens in it, whatever the micro-batching and process count, so gradient accumulation and data
  parallelism give the gradient of one big batch (not a mean of micro-batch means).
* The example order is a function of (seed, step), or for a streamed corpus a position saved with the checkpoint,
  and checkpoints hold every RNG, so a run killed and resumed ends bit-identical to an uninterrupted one on CPU.
* A non-finite loss stops the run with status ``diverged`` and the step; Ctrl-C checkpoints at the end of the
  current step and stops with status ``interrupted``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import check_writable_folder, finite_record, read_json, rewrite_jsonl, write_json
from ..atomic import read_jsonl as atomic_read_jsonl
from ..console import phase
from ..encoding import Encoded, collate
from ..evaluation import EvalResult, evaluate
from ..models import peak_flops, training_flops_per_token
from ..optim import create_optimizer, fused_optimizer_args
from ..optim.registry import REGISTRY, resolve_name
from ..schedules import create_scheduler
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import loss_targets, summed_loss
from .lr_source import LRResolution, resolve_lr, stability_warning
from .order import ExampleOrder
from .records import RunRecord, StepRecord
from .setup import TrialInputs, prepare_trial
from .stream import StreamedBatches
from .telemetry import (UTILISATION_FILE, JsonlLog, UtilisationSampler, environment, memory, peak_rss_bytes,
                        progress_bar)

# The update norm needs a copy of the trainable weights from before the step: nothing next to LoRA adapters, a second
# model in a full fine-tune. Above this many trainable elements (512 MiB in fp32) it is not recorded (None).
UPDATE_NORM_MAX_ELEMENTS = 1 << 27


class RunMismatchError(ValueError):
    """The output folder holds a different run (or something that is not a run)."""


@dataclass
class TrainResult:
    """What ``train`` returns: everything the run files hold, so a caller (a study's executor) needs not read
    them back. ``steps`` and ``evaluations`` are the main process's (empty on the others)."""

    status: str  # done | diverged | interrupted | paused
    steps_completed: int
    metrics: dict[str, Any]
    out_dir: Path
    record: RunRecord  # result.json
    steps: list[StepRecord] = field(default_factory=list)  # metrics.jsonl
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # evals.jsonl
    predictions: list[dict[str, Any]] = field(default_factory=list)  # predictions.jsonl


def check_output_dir(config: TrainConfig) -> None:
    """Refuse an output folder that holds another run; reads only, so it is safe before any work."""
    out = config.out_dir
    check_writable_folder(out)
    saved = out / "config.json"
    if saved.exists():
        previous = TrainConfig.from_dict(read_json(saved)).identity()
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
    """Turns the first Ctrl-C or SIGTERM into a request to stop at the end of the step; a second one interrupts at
    once. SIGTERM is what cluster schedulers (SLURM, Kubernetes, preemptible VMs) send before SIGKILL."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        try:
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


@dataclass
class Run:
    """A run in progress: what ``prepare`` built and the loop's position, shared by the parts of ``train``."""

    config: TrainConfig
    accelerator: Any
    inputs: TrialInputs
    model: torch.nn.Module  # wrapped by accelerate
    unwrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    lr_resolution: LRResolution
    eval_examples: list
    trainable: list[torch.Tensor]
    track_update: bool
    order: ExampleOrder | StreamedBatches  # which rows each step trains on
    step: int = 0
    elapsed: float = 0.0
    tokens_seen: int = 0
    steps: list[StepRecord] = field(default_factory=list)  # every step of the run, those before a resume included
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    # Model FLOPs utilisation = this x tokens/s: training FLOPs per token over the peak of the GPUs, on a known GPU
    # and for a full-parameter causal LM (pre-training) only, since LoRA skips most of the FLOPs the estimate counts.
    mfu_per_token_per_second: float | None = None
    step_log: JsonlLog | None = None  # the main process writes the run files
    eval_log: JsonlLog | None = None
    show_progress: bool = False  # status lines while evaluating
    sampler: UtilisationSampler | None = None  # the main process's utilisation timeline

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def train(config: TrainConfig, *, show_progress: bool = True) -> TrainResult:
    """Run (or resume, or read back) the trial ``config`` describes: prepare, resume, step until done, evaluating
    and checkpointing on the way, then finish with the final evaluation and the run's record."""
    config.validate()
    check_output_dir(config)
    finished = finished_run(config)
    if finished is not None:
        return finished
    run = prepare(config, show_progress)
    try:
        resume(run)
        status, diverged_at = run_steps(run, show_progress)
        return finish(run, status, diverged_at)
    finally:  # a run that raises stops its sampler too
        if run.sampler is not None:
            run.sampler.stop()


def finished_run(config: TrainConfig) -> TrainResult | None:
    """The result of a run that already ended (done or diverged) in its folder; None otherwise."""
    out = config.out_dir
    if not (out / "result.json").exists():
        return None
    record = RunRecord.from_dict(read_json(out / "result.json"))
    if record.status not in ("done", "diverged"):
        return None
    predictions = read_jsonl(out / "predictions.jsonl")
    return TrainResult(record.status, record.steps_completed, record.metrics, out, record,
                       [StepRecord.from_dict(line) for line in read_jsonl(out / "metrics.jsonl")],
                       read_jsonl(out / "evals.jsonl"), predictions)


def prepare(config: TrainConfig, show_progress: bool = False) -> Run:
    """Load the model and data, resolve the learning rate, build optimizer and schedule, and write config.json.
    Everything that can fail on bad input (model, data, optimizer) happens before anything is written."""
    from accelerate import Accelerator

    with phase(f"loading {config.model} and {config.task}", show_progress):
        inputs = prepare_trial(config)
    eval_examples = inputs.task.load("eval", config.eval_source, config.eval_limit)

    # cpu=True without a GPU lets torchrun / `accelerate launch --multi_gpu` processes form a gloo group on CPUs.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=config.trackers or None,
                              project_dir=str(config.out_dir), cpu=not torch.cuda.is_available())
    model = inputs.loaded.model
    if not config.quantize_4bit:  # quantized weights are placed at load; the rest moves before the optimizer exists
        model = model.to(accelerator.device)
    if config.batch_size % (accelerator.num_processes * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} must split evenly over {accelerator.num_processes} "
                         f"processes x {config.grad_accum} micro-batches")
    # The learning rate from its declared source; an estimate (adam_dds) is made here, on the model on its
    # device, and cached in the run folder so a resumed run reads it back.
    lr, lr_resolution = resolve_lr(config, inputs=inputs,
                                   show_progress=show_progress and accelerator.is_main_process)
    lr_resolution.warning = stability_warning(config, lr, lr_resolution, inputs=inputs,
                                              show_progress=show_progress and accelerator.is_main_process)
    if lr_resolution.warning and accelerator.is_main_process:
        print(lr_resolution.warning, file=sys.stderr)
    hparams = config.split_optimizer_args()[0]
    fused = fused_optimizer_args(config.optimizer, model, config.fused_optimizer, hparams)
    optimizer = create_optimizer(config.optimizer, model, **({} if lr is None else {"lr": lr}), **hparams, **fused)
    scheduler = _own_lr_scheduler(config, optimizer) if lr is None else \
        create_scheduler(optimizer, config.schedule, config.steps, config.warmup_steps, **config.schedule_args)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.is_main_process:
        config.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(config.out_dir / "config.json", config.to_dict(), indent=2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    unwrapped = accelerator.unwrap_model(model)
    peak = peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
    full_causal_lm = inputs.loaded.head == "causal_lm" and config.lora is None
    mfu_scale = (training_flops_per_token(unwrapped, config.max_seq_len) / (peak * accelerator.num_processes)
                 if peak and full_causal_lm else None)
    return Run(config, accelerator, inputs, model, unwrapped, optimizer, scheduler,
               lr_resolution, eval_examples, trainable,
               track_update=sum(p.numel() for p in trainable) <= UPDATE_NORM_MAX_ELEMENTS,
               order=inputs.stream or ExampleOrder(len(inputs.encoded), config.batch_size, config.seed),
               show_progress=show_progress,
               mfu_per_token_per_second=mfu_scale)


def _own_lr_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    """For an optimizer that computes its own step size: the registry's scheduler that only reports that step
    size, so the step records and checkpoints read as for any other run."""
    spec = REGISTRY[resolve_name(config.optimizer)]
    module, name = spec.own_lr_scheduler.split(":")
    return getattr(importlib.import_module(module), name)(optimizer)


def resume(run: Run) -> None:
    """Continue from the latest checkpoint, if any: weights, optimizer, schedule and RNG states, the step, and
    the run files cut back to that step. Starts the trackers."""
    config, out = run.config, run.config.out_dir
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, run.unwrapped, run.optimizer, run.scheduler)
        run.step, run.elapsed, run.tokens_seen = state["step"], state["elapsed"], state["tokens_seen"]
        if isinstance(run.order, StreamedBatches):
            run.order.load_state_dict(state["stream"])
    resume_step = run.step if checkpoint is not None else None
    if run.is_main:
        run.step_log = JsonlLog(out / "metrics.jsonl", resume_step)
        run.eval_log = JsonlLog(out / "evals.jsonl", resume_step)
        run.steps = [StepRecord.from_dict(line) for line in run.step_log.kept]
        run.evaluations = list(run.eval_log.kept)
        run.sampler = UtilisationSampler(JsonlLog(out / UTILISATION_FILE, resume_step), lambda: run.step).start()
    if config.trackers:
        # Trackers take flat scalars as hyperparameters: nested settings go in as JSON strings.
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                   for k, v in config.identity().items()}
        run.accelerator.init_trackers("adamlab", config=hparams)


def run_steps(run: Run, show_progress: bool = False) -> tuple[str, int | None]:
    """Step until the run's steps are done, evaluating and checkpointing as configured: ``("done", None)``,
    ``("paused", None)`` at ``stop_at`` (checkpointed), ``("diverged", step)`` at a non-finite loss, or
    ``("interrupted", None)`` after Ctrl-C (checkpointed)."""
    config = run.config
    end = config.steps if config.stop_at is None else config.stop_at  # the schedule still spans config.steps
    run.model.train()
    _optimizer_mode(run.optimizer, "train")
    bar = progress_bar(show_progress and run.is_main)
    with bar, _GracefulStop() as stop:
        bar_task = bar.add_task(f"{config.optimizer} on {config.task}", total=config.steps, completed=run.step,
                                loss="-", lr="-")
        while run.step < end:
            record = train_step(run)
            if record is None:
                return "diverged", run.step + 1
            if run.is_main:
                bar.update(bar_task, completed=run.step, loss=f"{record.loss:.4f}", lr=f"{record.lr:.2e}")
            if config.eval_every and run.step % config.eval_every == 0 and run.step < config.steps:
                evaluate_run(run)
            if (config.checkpoint_every and run.step % config.checkpoint_every == 0) or stop.requested \
                    or run.step == config.stop_at:
                checkpoint(run)
            if stop.requested:
                return "interrupted", None
    # At stop_at, checkpointed: the same config with a later stop_at continues from here.
    return ("done" if run.step == config.steps else "paused"), None


def train_step(run: Run) -> StepRecord | None:
    """One optimizer step on the global batch of ``run.step``, recorded; None (and no update) when the loss is not
    finite."""
    config, accelerator = run.config, run.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    per_process = config.batch_size // world
    micro = per_process // config.grad_accum
    pad_id = run.inputs.loaded.tokenizer.pad_token_id
    started = time.perf_counter()
    batch_examples = _batch_rows(run)
    targets = loss_targets(batch_examples)
    shard = batch_examples[rank * per_process : (rank + 1) * per_process]
    loss_sum = torch.zeros((), device=accelerator.device)
    for k in range(config.grad_accum):
        batch = collate(shard[k * micro : (k + 1) * micro], pad_id)
        batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
        sync = contextlib.nullcontext() if k == config.grad_accum - 1 else accelerator.no_sync(run.model)
        with sync, accelerator.autocast():
            summed = summed_loss(run.model, batch, run.inputs.loaded.head)
            # DDP averages gradients over processes; scaling by world undoes that, leaving the global sum.
            accelerator.backward(summed * (world / targets))
        loss_sum += summed.detach()
    loss = (accelerator.reduce(loss_sum, "sum") if world > 1 else loss_sum).item() / targets
    if not math.isfinite(loss):
        return None

    trainable = run.trainable
    if config.max_grad_norm is not None:
        grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in trainable])))
    lr = float(run.optimizer.param_groups[0]["lr"])  # a tensor where the optimizer computes it (HF Adafactor)
    before = [p.detach().clone() for p in trainable] if run.track_update else None
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    update_norm = None
    if before is not None:
        torch._foreach_sub_(before, [p.detach() for p in trainable])
        update_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before))).item()
        del before

    run.step += 1
    seconds = time.perf_counter() - started
    run.elapsed += seconds
    step_tokens = sum(len(e.input_ids) for e in batch_examples)
    run.tokens_seen += step_tokens
    hardware = memory()  # with GPU utilisation on CUDA, and the model FLOPs utilisation where it is defined
    if run.mfu_per_token_per_second:
        hardware["mfu"] = run.mfu_per_token_per_second * step_tokens / seconds
    record = StepRecord(run.step, loss, lr, float(grad_norm), update_norm, seconds, step_tokens / seconds,
                        run.order.epoch(run.step), hardware)
    if run.is_main:
        run.steps.append(record)
        run.step_log.write(record.to_dict())
        if config.trackers:
            accelerator.log({f"train/{k}": v for k, v in record.to_dict().items() if k != "step" and v is not None},
                            step=run.step)
    return record


def _batch_rows(run: Run) -> list[Encoded]:
    """The encoded rows of step ``run.step``: the next ones of a streamed corpus, or the examples the order picks."""
    if isinstance(run.order, StreamedBatches):
        return run.order.batch(run.step)
    return [run.inputs.encoded[i] for i in run.order.batch(run.step)]


def evaluate_run(run: Run) -> EvalResult | None:
    """Evaluate on every evaluation example (the main process; the others wait), and record it."""
    config, result = run.config, None
    if run.is_main:
        _optimizer_mode(run.optimizer, "eval")
        loaded = run.inputs.loaded
        with phase(f"evaluating at step {run.step} on {len(run.eval_examples)} examples", run.show_progress):
            result = evaluate(run.unwrapped, loaded.tokenizer, loaded.head, run.inputs.task, run.eval_examples,
                              mode=config.eval_mode, batch_size=config.eval_batch_size,
                              max_seq_len=config.max_seq_len)
        _optimizer_mode(run.optimizer, "train")
        line = {"step": run.step, **result.metrics, "seconds": result.seconds}
        run.evaluations.append(line)
        run.eval_log.write(line)
        if config.trackers:
            run.accelerator.log({f"eval/{k}": v for k, v in result.metrics.items()}, step=run.step)
    run.accelerator.wait_for_everyone()
    return result


def checkpoint(run: Run) -> None:
    if run.is_main:
        position = {"stream": run.order.state_dict()} if isinstance(run.order, StreamedBatches) else {}
        save_checkpoint(run.config.out_dir, run.step, run.unwrapped, run.optimizer, run.scheduler,
                        run.config.keep_checkpoints, {"elapsed": run.elapsed, "tokens_seen": run.tokens_seen,
                                                      **position})
    run.accelerator.wait_for_everyone()


def finish(run: Run, status: str, diverged_at: int | None) -> TrainResult:
    """The final evaluation (of a run that is done or paused), the trained weights (of one that is done),
    predictions.jsonl and result.json."""
    config, out = run.config, run.config.out_dir
    final = evaluate_run(run) if status in ("done", "paused") else None
    if run.sampler is not None:
        run.sampler.stop()
    inner = getattr(run.optimizer, "optimizer", run.optimizer)
    record = RunRecord(
        status=status,
        steps_completed=run.step,
        diverged_at_step=diverged_at,
        metrics=final.metrics if final else {},
        evaluation={"mode": final.mode, **final.settings, "seconds": final.seconds} if final else None,
        config=config.to_dict(),
        model=run.inputs.loaded.info,
        optimizer={"name": config.optimizer, "class": type(inner).__name__,
                   "param_groups": _config_summary(run.optimizer)},
        lr=run.lr_resolution.to_dict(),
        schedule={"name": config.schedule, "warmup_steps": config.warmup_steps, **config.schedule_args},
        data=_data_summary(run),
        trainable_parameters=sum(p.numel() for p in run.trainable),
        tokens_seen=run.tokens_seen,
        wall_seconds=run.elapsed,
        peak_memory={"peak_rss_bytes": peak_rss_bytes(), **({"cuda_peak_bytes": torch.cuda.max_memory_allocated()}
                                                             if torch.cuda.is_available() else {})},
        processes=run.accelerator.num_processes,
        environment=environment(),
        utilisation=read_jsonl(out / UTILISATION_FILE),
    )
    predictions = final.predictions if final is not None else []
    if run.is_main:
        tokenizer = run.inputs.loaded.tokenizer
        if status == "done":
            _optimizer_mode(run.optimizer, "eval")
            run.unwrapped.save_pretrained(out / ("adapter" if config.lora is not None else "model"))
            tokenizer.save_pretrained(out / ("adapter" if config.lora is not None else "model"))
        if final is not None:
            rewrite_jsonl(out / "predictions.jsonl", [finite_record(prediction) for prediction in predictions])
        # Strict JSON (a non-finite metric is null, flagged under "nonfinite"), written last and whole: a run is
        # finished only once its result.json is complete.
        write_json(out / "result.json", finite_record(record.to_dict()), indent=2, default=str)
    if config.trackers:
        run.accelerator.end_training()
    return TrainResult(status, run.step, record.metrics, out, record, run.steps, run.evaluations, predictions)


def _data_summary(run: Run) -> dict[str, Any]:
    """The training and evaluation data of the run record: a streamed corpus by the rows and passes it read."""
    if isinstance(run.order, StreamedBatches):
        return {"streamed": True, "n_train_rows_read": run.step * run.config.batch_size,
                "epochs_completed": run.order.epoch_index, "n_eval": len(run.eval_examples)}
    encoded = run.inputs.encoded
    return {"n_train": len(encoded), "n_eval": len(run.eval_examples),
            "n_truncated_train": sum(e.truncated for e in encoded)}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return atomic_read_jsonl(path)
