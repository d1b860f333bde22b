import pytest
import torch

from adamlab.optim.lion import Lion


@pytest.mark.parametrize("foreach", [False, True])
def test_first_two_steps_by_hand(foreach):
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.1, foreach=foreach)

    p.grad = torch.tensor([0.5], dtype=torch.float64)
    optimizer.step()
    # decay 1·(1 - 0.1·0.1) = 0.99, then sign(0.9·0 + 0.1·0.5) = +1 moves it by -lr
    assert p.item() == pytest.approx(0.89, abs=1e-15)
    assert optimizer.state[p]["exp_avg"].item() == pytest.approx(0.01 * 0.5, abs=1e-15)

    p.grad = torch.tensor([-1.0], dtype=torch.float64)
    optimizer.step()
    # interpolation 0.9·0.005 + 0.1·(-1) < 0, so the sign flips and the step is +lr
    assert p.item() == pytest.approx(0.89 * 0.99 + 0.1, abs=1e-15)
    assert optimizer.state[p]["exp_avg"].item() == pytest.approx(0.99 * 0.005 - 0.01, abs=1e-15)


def test_every_coordinate_moves_by_exactly_lr():
    p = torch.zeros(1000, dtype=torch.float64, requires_grad=True)
    p.grad = torch.randn(1000, dtype=torch.float64)
    Lion([p], lr=0.01).step()
    assert torch.equal(p.detach().abs(), torch.full_like(p, 0.01))
