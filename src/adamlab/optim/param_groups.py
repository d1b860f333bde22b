"""Which parameters get weight decay: the default policy and the two param groups it gives a model.

Kept apart from the registry so optimizers that build their own groups from a model (LDAdam) can use the policy
without importing the registry that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def no_weight_decay(name: str, param: torch.Tensor, module: nn.Module) -> bool:
    """The default policy: biases, normalisation weights and every other parameter with fewer than two dimensions
    are not decayed; matrices (linear, embedding, convolution weights) are."""
    return param.ndim < 2 or name.endswith("bias") or "norm" in type(module).__name__.lower()


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Callable[[str, torch.Tensor, nn.Module], bool] = no_weight_decay,
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group (empty groups dropped)."""
    decay, skip, seen = [], [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # frozen, or tied to one already placed
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            (skip if no_decay(full_name, param, module) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": skip, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
