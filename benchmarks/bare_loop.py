"""The bare torch training loop the throughput benchmarks compare `adamlab train` against: forward with the
model's own loss, backward, clip at 1.0, optimizer step, on the same rows in the same order as adamlab."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from adamlab.encoding import collate
from adamlab.training.order import ExampleOrder


def bare_step_seconds(model: nn.Module, rows: Sequence, pad_token_id: int, optimizer: torch.optim.Optimizer,
                      order: ExampleOrder, steps: int) -> list[float]:
    """Seconds per step of the plain loop, each step timed on its own."""
    model.train()
    seconds = []
    for step in range(steps):
        started = time.perf_counter()
        batch = collate([rows[i] for i in order.batch(step)], pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    return seconds
