"""How much memory an optimizer's state takes."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by every tensor in ``optimizer.state_dict()`` (wrapped optimizers included), each storage
    counted once: moments, factored statistics, slow weights, quantization maps."""
    seen, total = set(), 0
    for tensor in _tensors(optimizer.state_dict()):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes(), tensor.device)
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total
