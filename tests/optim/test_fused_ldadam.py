"""LDAdam's faster low-rank step: same-shaped matrices share one batched QR, equal to one QR per matrix."""

from __future__ import annotations

import torch

from adamlab.optim import LDAdamW


def matrices(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # blocks are d x rank with d the projected side: 8 for the right-projected 12x8, 6 for the left-projected 6x20
    shapes = [(12, 8), (12, 8), (12, 8), (6, 20), (6, 20)]
    return [torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in shapes]


def step_with_grads(optimizer: LDAdamW, params: list[torch.Tensor], steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        optimizer.step()


def test_same_shaped_matrices_share_one_qr_call(monkeypatch) -> None:
    params = matrices()
    optimizer = LDAdamW([{"params": params, "enable_lowrank": True}], lr=1e-2, rank=3)
    step_with_grads(optimizer, params, 1)  # the first basis comes from an SVD
    batch_sizes = []
    qr = torch.linalg.qr

    def counting_qr(a, *args, **kwargs):
        batch_sizes.append(a.shape[0] if a.dim() == 3 else 1)
        return qr(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "qr", counting_qr)
    step_with_grads(optimizer, params, 1)
    assert sorted(batch_sizes) == [2, 3]


def test_batched_qr_equals_one_qr_per_matrix() -> None:
    """Each matrix alone in its own optimizer (no batching) ends where the batched group does."""
    params = matrices()
    together = LDAdamW([{"params": params, "enable_lowrank": True}], lr=1e-2, rank=3)
    step_with_grads(together, params, 5)
    for index in range(len(params)):
        alone = [p.detach().clone().requires_grad_() for p in matrices()]
        optimizer = LDAdamW([{"params": [alone[index]], "enable_lowrank": True}], lr=1e-2, rank=3)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in alone]
            alone[index].grad = grads[index]
            optimizer.step()
        torch.testing.assert_close(alone[index], params[index], rtol=0, atol=1e-12)
