"""The AdamDDS step size of a planned run: ``adamlab.stepsize``'s estimator on the trial's own model, LoRA
initialisation, training data and loss, so L0 and K are those of the loss the optimizer will see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..stepsize import StepsizeEstimate, estimate_stepsize
from ..stepsize.presets import FROM_PRESET
from .config import DDS_SAMPLES, TrainConfig
from .losses import loss_targets, training_loss
from .setup import TrialInputs, prepare_trial


def estimate_for_training(
    model: nn.Module,
    head: str,
    encoded_examples: Sequence,
    pad_id: int,
    *,
    batch_size: int = FROM_PRESET,
    total_steps: int | None,
    samples: int | None = FROM_PRESET,
    seed: int,
    horizon: str | int = FROM_PRESET,
    preset: str = "default",
    **options: Any,
) -> StepsizeEstimate:
    """:func:`~adamlab.stepsize.estimate_stepsize` on encoded training examples with the training loop's own loss
    (the batch's summed token losses over its number of loss targets), so L0 and K are those of the loss the
    optimizer will see. ``samples`` is ``n_examples``; ``options`` go to ``estimate_stepsize``. Batches are moved
    to the model's device."""
    loss_fn = training_loss(head, pad_id, next(model.parameters()).device)
    return estimate_stepsize(model, loss_fn, encoded_examples, batch_size=batch_size, total_steps=total_steps,
                             n_examples=samples, seed=seed, horizon=horizon, preset=preset, targets_fn=loss_targets,
                             **options)


def estimate_for_inputs(config: TrainConfig, inputs: TrialInputs, **options: Any) -> StepsizeEstimate:
    """The estimate for the run ``config`` plans, from its prepared inputs: horizon = its steps, ``samples``
    examples (its ``optimizer_args``, default ``DDS_SAMPLES``), its seed; ``options`` override these and go to
    ``estimate_stepsize``."""
    loaded = inputs.loaded
    settings = {"total_steps": config.steps, "samples": config.optimizer_args.get("samples", DDS_SAMPLES),
                "seed": config.seed, "model_id": config.model, "adapter_config": loaded.info.get("lora"), **options}
    return estimate_for_training(loaded.model, loaded.head, inputs.encoded, loaded.tokenizer.pad_token_id,
                                 **settings)


def estimate_for_config(config: TrainConfig, **options: Any) -> StepsizeEstimate:
    """The estimate for a planned run: its model, LoRA initialisation (seeded as the run seeds it), training data
    and horizon (its steps). Studies call it once per model and task."""
    return estimate_for_inputs(config, prepare_trial(config), **options)
