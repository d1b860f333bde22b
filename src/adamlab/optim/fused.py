"""When a training run turns on an optimizer's fused step (``TrainConfig.fused_optimizer``, ``--fused-optimizer``).

A fused step costs compile seconds once per process (tens of seconds on a small CPU with a cold inductor cache,
about a second warm) and saves a share of every step that grows with the trainable parameters: on a full
fine-tune the optimizer streams every weight several times per step, with LoRA it touches a few hundred thousand
values and the compile never pays back. So "auto" turns it on from ``FUSED_MIN_ELEMENTS`` trainable elements up.
"""

from __future__ import annotations

from typing import Any

import torch

from . import registry
from ._fused import fused_unavailable_reason

__all__ = ["FUSED_MIN_ELEMENTS", "fused_optimizer_args"]

# 4M elements: LoRA on the built-in models stays far below, a full fine-tune of the 8x512 Llama (25M) is above.
FUSED_MIN_ELEMENTS = 1 << 22


def fused_optimizer_args(
    name: str, model: torch.nn.Module, requested: bool | None, optimizer_args: dict[str, Any]
) -> dict[str, Any]:
    """The extra optimizer arguments for ``requested`` (True, False, or None = on where it pays): ``{"fused":
    True}`` or nothing. An explicit ``fused``/``foreach`` in ``optimizer_args`` wins over "auto"; asking for it
    with an optimizer that has no fused path raises ``ValueError`` naming those that have one."""
    if requested is False or "fused" in optimizer_args:
        return {}
    spec = registry.REGISTRY.get(registry.resolve_name(name))  # None: a wrapper such as lookahead
    if spec is not None and "fused" in spec.fixed:  # the name already implies it (adamw_fused)
        return {}
    if spec is None or "fused" not in registry.accepted_hparams(spec.resolve()):
        if requested:
            having = [n for n in registry.available_optimizers() if _accepts_fused(n)]
            raise ValueError(f"optimizer {name!r} has no fused step; these do: {', '.join(having)}")
        return {}
    if requested:
        return {"fused": True}
    if "foreach" in optimizer_args:
        return {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if sum(p.numel() for p in trainable) < FUSED_MIN_ELEMENTS:
        return {}
    device_types = {p.device.type for p in trainable}
    return {"fused": True} if all(fused_unavailable_reason(t) is None for t in device_types) else {}


def _accepts_fused(name: str) -> bool:
    spec = registry.REGISTRY.get(name)
    if spec is None:
        return False
    try:
        return "fused" in registry.accepted_hparams(spec.resolve())
    except registry.MissingDependencyError:
        return False
