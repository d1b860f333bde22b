"""adamlab inside the Hugging Face ``Trainer``: any adamlab optimizer and schedule, built from the model.

``Trainer`` builds optimizers from two anonymous parameter groups (decay / no decay), which silently turns LDAdam
into plain AdamW (no low-rank groups) and hands Adam-mini parameters without names (no partition). Here the
optimizer is always built by ``adamlab.optim.create_optimizer`` from the model itself, so each optimizer gets its
model-aware groups, adamlab's no-decay policy (``no_decay=``) and the Lookahead wrapper (``"lookahead"``,
``base=...``). Three ways in:

* ``AdamlabTrainer(model, args, optimizer="ldadam", optimizer_kwargs={"rank": 8}, schedule="wsd",
  schedule_kwargs={"decay_ratio": 0.2}, ...)``: a ``Trainer`` that takes the learning rate, weight decay and warmup
  from its ``TrainingArguments`` and logs adamlab's diagnostics (``AdamlabCallback``);
* ``Trainer(..., optimizer_cls_and_kwargs=optimizer_cls_and_kwargs("adam_mini", lr=1e-3))``: a plain ``Trainer``
  (transformers >= 5 calls the returned factory with the model);
* ``Trainer(..., optimizers=(optimizer, create_scheduler(optimizer, ...)))``: objects you build yourself.

Checkpoints are the Trainer's own (``optimizer.pt``, ``scheduler.pt``, RNG states); a resumed run ends with the same
weights, bit for bit, as one that was never interrupted (tests/integrations/test_transformers.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import Trainer, TrainerCallback

from ..optim import create_optimizer
from ..optim.registry import resolve_name
from ..schedules import create_scheduler, get_schedule
from ..training.loop import UPDATE_NORM_MAX_ELEMENTS

__all__ = ["AdamlabCallback", "AdamlabOptimizerFactory", "AdamlabTrainer", "optimizer_cls_and_kwargs"]


class AdamlabOptimizerFactory:
    """transformers' optimizer-factory protocol: a first element of ``optimizer_cls_and_kwargs`` that is not an
    ``Optimizer`` class is instantiated and called as ``factory()(model, **kwargs)``, so the optimizer sees the model
    rather than Trainer's two anonymous groups."""

    def __call__(self, model: nn.Module, name: str, **hparams: Any) -> torch.optim.Optimizer:
        return create_optimizer(name, model, **hparams)


def optimizer_cls_and_kwargs(name: str, **hparams: Any) -> tuple[type[AdamlabOptimizerFactory], dict[str, Any]]:
    """``Trainer(optimizer_cls_and_kwargs=optimizer_cls_and_kwargs("ldadam", lr=1e-3, rank=8))``.

    ``lr`` is required: transformers does not pass ``TrainingArguments.learning_rate`` to a factory, and the
    optimizer's own default would be used silently. The name is checked now; hyperparameters when Trainer builds it.
    """
    if int(transformers.__version__.split(".")[0]) < 5:
        raise RuntimeError("optimizer_cls_and_kwargs needs transformers >= 5 (optimizer factories); "
                           "use AdamlabTrainer instead")
    if "lr" not in hparams:
        raise ValueError("pass lr: transformers does not give optimizer factories TrainingArguments.learning_rate")
    return AdamlabOptimizerFactory, {"name": resolve_name(name), **hparams}


def _alpha(estimate: str | Path | Mapping[str, Any] | None) -> float | None:
    if estimate is None:
        return None
    record = estimate if isinstance(estimate, Mapping) else json.loads(Path(estimate).read_text(encoding="utf-8"))
    if "alpha" not in record:
        raise ValueError(f"a step-size estimate must hold 'alpha' (as `adamlab lr --json` writes); got {sorted(record)}")
    return float(record["alpha"])


class AdamlabCallback(TrainerCallback):
    """Adds adamlab's diagnostics to each of the Trainer's log records (so to its trackers too):

    * ``update_norm``: the L2 norm of the last optimizer step's change to the trainable weights, as in ``adamlab
      train``'s metrics (skipped above ``UPDATE_NORM_MAX_ELEMENTS`` trainable elements, where the copy would cost
      more memory than it is worth);
    * with ``estimate`` (a step-size estimate: ``adamlab lr --json``'s file, or a dict with ``alpha``):
      ``dds_alpha`` and ``lr_over_dds_alpha``, how far the learning rate is from the data-dependent step size.
    """

    def __init__(self, estimate: str | Path | Mapping[str, Any] | None = None):
        self.alpha = _alpha(estimate)
        self._params: list[torch.Tensor] = []
        self._before: list[torch.Tensor] | None = None
        self.update_norm: float | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainable = [p for p in model.parameters() if p.requires_grad]
        self._params = trainable if sum(p.numel() for p in trainable) <= UPDATE_NORM_MAX_ELEMENTS else []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._params:
            self._before = [p.detach().clone() for p in self._params]

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._before is not None:
            change = torch._foreach_sub([p.detach() for p in self._params], self._before)
            self.update_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(change))).item()
            self._before = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:  # training records only, not evaluation or the final summary
            return
        extra: dict[str, float] = {}
        if self.update_norm is not None:
            extra["update_norm"] = self.update_norm
        if self.alpha is not None:
            extra["dds_alpha"] = self.alpha
            if "learning_rate" in logs:
                extra["lr_over_dds_alpha"] = float(logs["learning_rate"]) / self.alpha
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)


class AdamlabTrainer(Trainer):
    """A ``Trainer`` whose optimizer is any adamlab optimizer built from the model, and whose schedule is any
    adamlab schedule.

    ``optimizer``: an adamlab name (``adamlab optimizers``); ``optimizer_kwargs``: its hyperparameters, over
    ``lr = args.learning_rate`` and ``weight_decay = args.weight_decay`` (when > 0). Betas and eps come from
    ``optimizer_kwargs`` only: ``TrainingArguments``' Adam defaults would be wrong for Lion or CAME.
    ``schedule``: an adamlab schedule name with ``schedule_kwargs``, over ``args.max_steps`` and
    ``args.warmup_steps``; ``None`` keeps ``args.lr_scheduler_type``. ``estimate`` goes to the ``AdamlabCallback``
    added first among the callbacks (so every tracker sees its diagnostics); ``diagnostics=False`` leaves it out.
    """

    def __init__(
        self,
        *args: Any,
        optimizer: str = "adamw",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        schedule: str | None = None,
        schedule_kwargs: Mapping[str, Any] | None = None,
        estimate: str | Path | Mapping[str, Any] | None = None,
        diagnostics: bool = True,
        **kwargs: Any,
    ):
        self.optimizer_name = resolve_name(optimizer)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.schedule = schedule
        self.schedule_kwargs = dict(schedule_kwargs or {})
        super().__init__(*args, **kwargs)
        if schedule is not None and self.args.max_steps > 0:  # a bad name or argument fails now, not at train()
            get_schedule(schedule, self.args.max_steps, self.args.get_warmup_steps(self.args.max_steps),
                         base_lr=self.args.learning_rate, **self.schedule_kwargs)
        if diagnostics:
            self.callback_handler.callbacks.insert(0, AdamlabCallback(estimate))

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            hparams: dict[str, Any] = {"lr": self.args.learning_rate}
            if self.args.weight_decay > 0:
                hparams["weight_decay"] = self.args.weight_decay
            self.optimizer = create_optimizer(self.optimizer_name, model or self.model,
                                              **{**hparams, **self.optimizer_kwargs})
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.schedule is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = create_scheduler(optimizer or self.optimizer, self.schedule, num_training_steps,
                                                 self.args.get_warmup_steps(num_training_steps),
                                                 **self.schedule_kwargs)
            self._created_lr_scheduler = True
        return self.lr_scheduler
