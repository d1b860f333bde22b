"""The training loss, shared by the loop and by the step-size estimators that must see the loss the optimizer sees.

An optimizer step's loss is the sum of per-token losses over the global batch divided by its number of loss
targets, so any split into micro-batches and processes gives the gradient of one big batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoding import IGNORE_INDEX, collate


def summed_loss(model, batch: dict[str, torch.Tensor], head: str) -> torch.Tensor:
    """The sum (not mean) of the batch's losses, in at least fp32, so the caller can normalise by the global
    count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if head == "classifier":
        if batch["labels"].is_floating_point():  # a regression head (STS-B): squared error, as HF's regression loss
            return F.mse_loss(logits[:, 0], batch["labels"].to(logits.dtype), reduction="sum")
        return F.cross_entropy(logits, batch["labels"], reduction="sum")
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum",
                           ignore_index=IGNORE_INDEX)


def loss_targets(encoded) -> int:
    """Targets in a batch: examples for a classifier, next-token labels (the first token has none) otherwise."""
    if not isinstance(encoded[0].labels, list):
        return len(encoded)
    return sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in encoded)


def training_loss(head: str, pad_id: int, device: torch.device) -> Callable[[nn.Module, list], Tensor]:
    """The training loop's loss of a list of encoded examples: their summed losses over their loss targets."""

    def loss_fn(model: nn.Module, items: list) -> Tensor:
        batch = {name: tensor.to(device) for name, tensor in collate(items, pad_id).items()}
        return summed_loss(model, batch, head) / loss_targets(items)

    return loss_fn
