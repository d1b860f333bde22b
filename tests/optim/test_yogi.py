"""Yogi-specific checks: hand-computed steps, the sign-based second moment, the initial accumulator, L2 decay."""

from __future__ import annotations

import math

import pytest
import torch

from adamlab.optim.yogi import Yogi


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def yogi_by_hand(p, grads, *, lr, betas=(0.9, 0.999), eps=1e-3, init=1e-6, weight_decay=0.0):
    """torch-optimizer's Yogi, element by element in Python floats."""
    beta1, beta2 = betas
    p = list(p)
    m = [init] * len(p)
    v = [init] * len(p)
    for t, g in enumerate(grads, start=1):
        for i in range(len(p)):
            gi = g[i] + weight_decay * p[i]
            m[i] = beta1 * m[i] + (1 - beta1) * gi
            v[i] = v[i] - (1 - beta2) * sign(v[i] - gi * gi) * gi * gi
            denom = math.sqrt(v[i]) / math.sqrt(1 - beta2**t) + eps
            p[i] = p[i] - lr / (1 - beta1**t) * m[i] / denom
    return p, m, v


P0 = [1.0, -2.0, 0.5, 0.0]
GRADS = [[0.1, -0.3, 2.0, 0.0], [0.2, 0.1, -1.0, 1e-4]]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "hparams",
    [
        dict(lr=0.1),
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, init=0.01, weight_decay=0.3),
    ],
)
def test_first_two_steps_match_hand_computation(foreach, hparams):
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    kwargs = {("initial_accumulator" if k == "init" else k): v for k, v in hparams.items()}
    opt = Yogi([p], foreach=foreach, **kwargs)
    for t, g in enumerate(GRADS, start=1):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        want_p, want_m, want_v = yogi_by_hand(P0, GRADS[:t], **hparams)
        torch.testing.assert_close(p.detach(), torch.tensor(want_p, dtype=torch.float64), rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor(want_m, dtype=torch.float64))
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], torch.tensor(want_v, dtype=torch.float64))
    assert opt.state[p]["step"] == 2 and type(opt.state[p]["step"]) is int


@pytest.mark.parametrize("foreach", [False, True])
def test_second_moment_moves_additively_towards_g_squared(foreach):
    """v - (1 - beta2) sign(v - g^2) g^2: up by (1 - beta2) g^2 when g^2 > v, down by the same when g^2 < v,
    unchanged on a tie; Adam would give beta2 v + (1 - beta2) g^2 in every case."""
    beta2 = 0.9
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Yogi([p], betas=(0.9, beta2), initial_accumulator=1.0, foreach=foreach)
    p.grad = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)  # g^2 = 4 > v, 0.25 < v, 1 == v
    opt.step()
    v = opt.state[p]["exp_avg_sq"].tolist()
    assert v == [1.0 + (1 - beta2) * 4.0, 1.0 - (1 - beta2) * 0.25, 1.0]
    adam_v = [beta2 * 1.0 + (1 - beta2) * g * g for g in (2.0, 0.5, 1.0)]
    assert all(abs(a - b) > 1e-3 for a, b in zip(v[:2], adam_v[:2]))


@pytest.mark.parametrize("foreach", [False, True])
def test_zero_gradient_leaves_second_moment_alone(foreach):
    """Adam's v decays geometrically once gradients vanish (so its step size jumps back up); Yogi's does not."""
    p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = Yogi([p], foreach=foreach)
    p.grad = torch.full_like(p, 3.0)
    opt.step()
    v_after_spike = opt.state[p]["exp_avg_sq"].clone()
    for _ in range(100):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert torch.equal(opt.state[p]["exp_avg_sq"], v_after_spike)


def test_both_moments_start_at_the_initial_accumulator():
    p = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    opt = Yogi([p], betas=(0.5, 0.999), initial_accumulator=0.25)
    p.grad = torch.zeros_like(p)
    opt.step()
    # m_1 = beta1 * init + (1 - beta1) * 0; v_1 = init - (1 - beta2) * sign(init) * 0
    assert torch.equal(opt.state[p]["exp_avg"], torch.full_like(p, 0.125))
    assert torch.equal(opt.state[p]["exp_avg_sq"], torch.full_like(p, 0.25))


@pytest.mark.parametrize("foreach", [False, True])
def test_weight_decay_is_an_l2_term_in_the_gradient(foreach):
    """weight_decay=wd with gradient g is the same step as no decay with gradient g + wd * p."""
    decayed = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    plain = decayed.detach().clone().requires_grad_()
    with_decay = Yogi([decayed], weight_decay=0.1, foreach=foreach)
    without = Yogi([plain], foreach=foreach)
    for step in range(3):
        g = torch.tensor([0.5, -0.25, 0.0], dtype=torch.float64) * (step + 1)
        decayed.grad = g.clone()
        plain.grad = g + 0.1 * plain.detach()
        with_decay.step()
        without.step()
    torch.testing.assert_close(decayed, plain, rtol=0, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_state_keeps_the_param_dtype(foreach):
    p = torch.randn(4, 5, dtype=torch.bfloat16, requires_grad=True)
    opt = Yogi([p], foreach=foreach)
    p.grad = torch.randn_like(p)
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
    assert opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16
