"""One trial's configuration: model, task, optimizer, schedule, seed. Validated before any work starts."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..extras import check_trackers
from ..models import DTYPES, LoraSettings, builtin_models
from ..optim import create_optimizer, fused_optimizer_args
from ..optim.registry import REGISTRY, resolve_name
from ..schedules import get_schedule
from ..stepsize import StepsizeEstimate
from ..tasks import get_task

MIXED_PRECISION = ("no", "bf16", "fp16")
DDS_SAMPLES = 256  # examples the adam_dds step size is estimated on when the run has no estimate
# adam_dds's optimizer_args that configure its step size, not Adam: a saved estimate, alpha's multiplier, the sample.
DDS_ARGS = ("estimate", "multiplier", "samples")
EVAL_MODES = ("auto", "generate", "score")
DEFAULT_LR = 2e-4
# How a learning rate tuned at base_batch_size carries to the run's batch size: alpha x sqrt(B / B0) for Adam-style
# optimizers (the variance of the gradient estimate scales as 1/B), alpha x B / B0 for SGD-style ones.
LR_SCALINGS = ("sqrt", "linear")


@dataclass
class TrainConfig:
    model: str
    task: str
    out: str | None = None  # the run folder; None for a run that is only planned (a study's trial, an estimate)
    tokenizer: str | None = None  # from-scratch models only: replaces their default tokenizer
    task_args: dict[str, Any] = field(default_factory=dict)  # e.g. prompt_style="adamdds"
    optimizer: str = "adamw"
    lr: float | None = DEFAULT_LR  # None (and only None) for an optimizer in a mode that computes its own step size
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # every hyperparameter but lr
    schedule: str = "constant"
    schedule_args: dict[str, Any] = field(default_factory=dict)
    warmup_steps: int | float = 0
    steps: int = 100
    stop_at: int | None = None  # pause after this step with a checkpoint and an evaluation (successive halving)
    batch_size: int = 16  # examples per optimizer step, over all processes and micro-batches
    grad_accum: int = 1  # micro-batches per optimizer step on each process
    # A fixed lr is taken as tuned at base_batch_size and scaled to batch_size by this rule (LR_SCALINGS) where the
    # lr is resolved; an estimated lr (dds, range-test) is made at the run's own batch size and is not rescaled.
    lr_scaling: str | None = None
    base_batch_size: int | None = None
    max_grad_norm: float | None = 1.0
    seed: int = 0
    dtype: str = "auto"
    mixed_precision: str = "no"
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    quantize_4bit: bool = False
    max_seq_len: int = 512
    mask_prompt: bool = True
    train_source: str | None = None
    eval_source: str | None = None
    train_limit: int | None = None
    # Language modelling: read, tokenise and pack the training corpus as the steps need it, in corpus order, instead
    # of all of it before step 1 (adamlab.training.stream); train_limit is then the first documents of each pass.
    stream: bool = False
    eval_limit: int | None = None  # None: every evaluation example
    eval_every: int = 0  # 0: evaluate once, at the end
    eval_batch_size: int = 16
    eval_mode: str = "auto"  # score the answer choices where the task has them, else generate
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    trackers: list[str] = field(default_factory=list)  # accelerate trackers: tensorboard, mlflow, wandb
    fused_optimizer: bool | None = None  # the compiled optimizer step; None: on where it pays (adamlab.optim.fused)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field; checks names against the registries and
        builds the schedule once, so nothing fails later mid-run."""
        if self.model not in builtin_models() and self.model.startswith((".", "/", "~")) and not Path(self.model).expanduser().is_dir():
            raise FileNotFoundError(f"model folder {self.model} does not exist")
        task = get_task(self.task, **self.task_args)
        if "lr" in self.optimizer_args:
            raise ValueError("give the learning rate as lr, not inside optimizer_args")
        # Building the optimizer on a throwaway parameter runs every hyperparameter check now, not mid-run.
        hparams, dds_args = self.split_optimizer_args()
        if self.computes_own_lr:
            if self.lr is not None:
                raise ValueError(f"{self.optimizer} with {self.optimizer_args} computes its own step size: give no lr "
                                 f"(lr=None)")
            if self.schedule != "constant" or self.warmup_steps:
                raise ValueError(f"{self.optimizer} with {self.optimizer_args} schedules its own step size: use the "
                                 f"constant schedule and no warmup")
        elif self.lr is None:
            raise ValueError(f"{self.optimizer} needs a learning rate (lr); only an optimizer in a mode that computes "
                             f"its own step size (e.g. adafactor_hf with relative_step=true) takes none")
        lr = {} if self.lr is None else {"lr": self.lr}
        create_optimizer(self.optimizer, [torch.nn.Parameter(torch.zeros(1))], **lr, **hparams)
        fused_optimizer_args(self.optimizer, torch.nn.Linear(1, 1), self.fused_optimizer, hparams)
        if self.lr_source == "dds":  # the step size comes from an estimate, given or made before step 1
            samples = dds_args.get("samples", DDS_SAMPLES)
            if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
                raise ValueError(f"adam_dds samples must be an int >= 1, got {samples!r}")
            multiplier = dds_args.get("multiplier", 1.0)
            if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier > 0:
                raise ValueError(f"adam_dds multiplier must be a number > 0, got {multiplier!r}")
            if "estimate" in dds_args and not isinstance(dds_args["estimate"], StepsizeEstimate):
                StepsizeEstimate.load(dds_args["estimate"])
        for name in ("train_source", "eval_source"):
            source = getattr(self, name)
            if source is not None and source.endswith((".jsonl", ".json")) and not Path(source).is_file():
                raise FileNotFoundError(f"{name}: no data file at {source}")
        get_schedule(self.schedule, self.steps, self.warmup_steps, base_lr=self.lr, **self.schedule_args)
        check_trackers(self.trackers)
        for name in ("steps", "batch_size", "grad_accum", "max_seq_len", "eval_batch_size", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("eval_every", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.stop_at is not None and (isinstance(self.stop_at, bool) or not isinstance(self.stop_at, int)
                                         or not 1 <= self.stop_at <= self.steps):
            raise ValueError(f"stop_at must be an int in 1..steps ({self.steps}) or None, got {self.stop_at!r}")
        if self.lr_scaling is not None:
            if self.lr_scaling not in LR_SCALINGS:
                raise ValueError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)} or None; got {self.lr_scaling!r}")
            if isinstance(self.base_batch_size, bool) or not isinstance(self.base_batch_size, int) \
                    or self.base_batch_size < 1:
                raise ValueError(f"lr_scaling {self.lr_scaling} needs base_batch_size, the batch size the lr was "
                                 f"tuned at (an int >= 1); got {self.base_batch_size!r}")
            if self.computes_own_lr:
                raise ValueError(f"{self.optimizer} computes its own step size: there is no lr to scale")
        elif self.base_batch_size is not None:
            raise ValueError("base_batch_size is used only with lr_scaling (sqrt or linear)")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}; got {self.mixed_precision!r}")
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {', '.join(EVAL_MODES)}; got {self.eval_mode!r}")
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if not isinstance(self.stream, bool):
            raise ValueError(f"stream must be true or false, got {self.stream!r}")
        if self.stream and task.kind != "language_modeling":
            raise ValueError(f"stream reads a pre-training corpus; {self.task} is a {task.kind} task (read whole)")
        if self.stream and self.lr_source == "dds" and "estimate" not in self.optimizer_args:
            raise ValueError("a streamed run has no training examples in memory to estimate adam_dds's step size on: "
                             "give a saved estimate (estimate=FILE) or a fixed lr")
        if self.lora is None and self.quantize_4bit:
            raise ValueError("4-bit quantization needs LoRA: quantized base weights cannot be trained directly")

    @property
    def lr_source(self) -> str | None:
        """The source the optimizer's name implies for its learning rate (``"dds"`` for ``adam_dds``), else None."""
        key = resolve_name(self.optimizer)
        return REGISTRY[key].lr_source if key in REGISTRY else None

    @property
    def lr_batch_factor(self) -> float:
        """The factor lr_scaling applies to a fixed lr: sqrt(batch_size / base_batch_size), the ratio itself for
        ``linear``, 1 without scaling."""
        if self.lr_scaling is None:
            return 1.0
        ratio = self.batch_size / self.base_batch_size
        return math.sqrt(ratio) if self.lr_scaling == "sqrt" else ratio

    @property
    def computes_own_lr(self) -> bool:
        """Whether the optimizer, with these hyperparameters, computes its own step size (the registry says when)."""
        key = resolve_name(self.optimizer)
        return key in REGISTRY and REGISTRY[key].computes_own_lr(self.optimizer_args)

    def split_optimizer_args(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``optimizer_args`` as (the optimizer's hyperparameters, the arguments of its learning-rate source)."""
        if self.lr_source != "dds":
            return dict(self.optimizer_args), {}
        hparams = {k: v for k, v in self.optimizer_args.items() if k not in DDS_ARGS}
        return hparams, {k: v for k, v in self.optimizer_args.items() if k in DDS_ARGS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if data.get("lora") is not None:
            data["lora"] = LoraSettings(**{**data["lora"], "targets": _tuple_or_none(data["lora"].get("targets"))})
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run: everything but the bookkeeping of where and how often to save."""
        ignored = {"out", "checkpoint_every", "keep_checkpoints", "trackers", "stop_at", "fused_optimizer"}  # same math
        # Fields added after studies were run count only when set, so existing trials keep their keys.
        unset_later_fields = {name for name in ("tokenizer", "lr_scaling", "base_batch_size")
                              if getattr(self, name) is None} | ({"stream"} if self.stream is False else set())
        return json.loads(json.dumps({k: v for k, v in self.to_dict().items() if k not in ignored | unset_later_fields}))

    @property
    def out_dir(self) -> Path:
        if not self.out:
            raise ValueError("this configuration has no run folder (out)")
        return Path(self.out)


def _tuple_or_none(value):
    return None if value is None else tuple(value)
