"""AdaBound-specific checks: hand-computed steps, the bounds closing on final_lr, final_lr following the lr."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from adamlab.optim.adabound import AdaBound

P0 = [0.5, -1.0]
GRADS = [[0.1, 200.0], [0.3, -150.0]]  # the second coordinate's Adam step is small enough to be lifted


def tiny(values=P0):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def reference(params, **hparams):
    from adabound import AdaBound as ReferenceAdaBound

    return ReferenceAdaBound(params, **hparams)


def reference_step(optimizer):
    with warnings.catch_warnings():  # adabound 0.0.5 uses add_'s deprecated (alpha, other) overload
        warnings.simplefilter("ignore", UserWarning)
        optimizer.step()


def bounds(t, final_lr, gamma):
    return final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))


@pytest.mark.parametrize("foreach", [False, True])
def test_first_two_steps_by_hand(foreach):
    lr, b1, b2, eps, final_lr, gamma, wd = 1e-3, 0.9, 0.999, 1e-8, 0.1, 1e-3, 1e-2
    param = tiny()
    optimizer = AdaBound([param], lr=lr, weight_decay=wd, foreach=foreach)
    theta, m, v = list(P0), [0.0, 0.0], [0.0, 0.0]
    for t, grad in enumerate(GRADS, start=1):
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        lower, upper = bounds(t, final_lr, gamma)
        etas = []
        for i, g in enumerate(grad):
            g += wd * theta[i]  # L2
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            etas.append(lr * math.sqrt(1 - b2**t) / (1 - b1**t) / (math.sqrt(v[i]) + eps))
            theta[i] -= min(max(etas[i], lower), upper) * m[i]
        assert lower < etas[0] < upper and etas[1] < lower  # one coordinate free, one clipped
        torch.testing.assert_close(param.detach(), torch.tensor(theta, dtype=torch.float64), atol=1e-15, rtol=0)
        assert optimizer.state[param]["step"] == t and isinstance(optimizer.state[param]["step"], int)


@pytest.mark.parametrize("amsbound", [False, True])
def test_bounds_close_in_on_final_lr(amsbound):
    """With a constant gradient the per-coordinate step size starts Adam-like (spread over decades) and
    stays inside [lower_t, upper_t], both of which converge to final_lr: the update becomes SGD's."""
    final_lr, gamma, steps = 0.1, 0.02, 3000
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    grad = torch.tensor([1e-3, 1.0, 1e3], dtype=torch.float64)
    optimizer = AdaBound([param], lr=1e-3, final_lr=final_lr, gamma=gamma, amsbound=amsbound)
    for t in range(1, steps + 1):
        before = param.detach().clone()
        param.grad = grad.clone()
        optimizer.step()
        eta = (before - param.detach()) / optimizer.state[param]["exp_avg"]
        lower, upper = bounds(t, final_lr, gamma)
        assert ((eta >= lower * (1 - 1e-12)) & (eta <= upper * (1 + 1e-12))).all(), (t, eta)
        if t == 1:
            assert eta.max() / eta.min() > 1e3  # Adam's scale-free step, about 0.01 / |g| here, clipped
    # every coordinate within the final bounds, final_lr * (1 +- ~1 / (gamma * T)), whatever its gradient's scale
    torch.testing.assert_close(eta, torch.full_like(eta, final_lr), atol=0, rtol=1.01 / (gamma * steps))


@pytest.mark.parametrize("foreach", [False, True])
def test_final_lr_follows_a_scheduler_like_the_reference(foreach):
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(5, generator=gen, dtype=torch.float64)
    ours_p, ref_p = init.clone().requires_grad_(), init.clone().requires_grad_()
    hparams = dict(lr=1e-2, final_lr=0.05, gamma=0.05)
    ours, ref = AdaBound([ours_p], foreach=foreach, **hparams), reference([ref_p], **hparams)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5) for o in (ours, ref)]
    for _ in range(40):
        grad = torch.randn(5, generator=gen, dtype=torch.float64)
        ours_p.grad, ref_p.grad = grad.clone(), grad.clone()
        ours.step()
        reference_step(ref)
        for scheduler in schedulers:
            scheduler.step()
        torch.testing.assert_close(ours_p, ref_p, atol=1e-14, rtol=0)
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-2 / 16) and ours.param_groups[0]["base_lr"] == 1e-2


def test_base_lr_survives_a_state_dict_round_trip():
    """Resuming mid-schedule into an optimizer built with the lr in effect keeps scaling against the original
    base lr (adabound 0.0.5 would take the new constructor's lr as its base and double final_lr here)."""
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(30)]
    init = torch.randn(4, generator=gen, dtype=torch.float64)

    def train(optimizer, scheduler, param, steps):
        for grad in steps:
            param.grad = grad.clone()
            optimizer.step()
            scheduler.step()

    straight_p = init.clone().requires_grad_()
    straight = AdaBound([straight_p], lr=1e-2, final_lr=0.05, gamma=0.1)
    train(straight, torch.optim.lr_scheduler.StepLR(straight, 10, gamma=0.5), straight_p, grads)

    first_p = init.clone().requires_grad_()
    first = AdaBound([first_p], lr=1e-2, final_lr=0.05, gamma=0.1)
    first_scheduler = torch.optim.lr_scheduler.StepLR(first, 10, gamma=0.5)
    train(first, first_scheduler, first_p, grads[:15])
    saved = copy.deepcopy((first.state_dict(), first_scheduler.state_dict()))
    assert saved[0]["param_groups"][0]["base_lr"] == 1e-2

    resumed_p = first_p.detach().clone().requires_grad_()
    resumed = AdaBound([resumed_p], lr=5e-3, final_lr=0.05, gamma=0.1)  # built with the lr in effect
    resumed_scheduler = torch.optim.lr_scheduler.StepLR(resumed, 10, gamma=0.5)
    resumed.load_state_dict(saved[0])
    resumed_scheduler.load_state_dict(saved[1])
    assert resumed.param_groups[0]["base_lr"] == 1e-2
    train(resumed, resumed_scheduler, resumed_p, grads[15:])
    assert torch.equal(resumed_p, straight_p)


@pytest.mark.parametrize("foreach", [False, True])
def test_added_param_group_takes_its_own_base_lr(foreach):
    a, b = tiny(), tiny([2.0, -3.0])
    b_alone = b.detach().clone().requires_grad_()
    optimizer = AdaBound([a], lr=1e-2, gamma=0.1, foreach=foreach)
    optimizer.add_param_group({"params": [b], "lr": 1e-3})
    alone = AdaBound([b_alone], lr=1e-3, gamma=0.1, foreach=foreach)
    assert optimizer.param_groups[1]["base_lr"] == 1e-3
    for t in range(20):
        if t == 10:  # a scheduler-like halving: both scale final_lr the same way
            optimizer.param_groups[1]["lr"] = alone.param_groups[0]["lr"] = 5e-4
        for p in (a, b, b_alone):
            p.grad = torch.full_like(p, 0.3 - 0.1 * t)
        optimizer.step()
        alone.step()
    torch.testing.assert_close(b, b_alone, atol=0, rtol=0)


def test_group_created_with_lr_0_is_frozen_then_uses_final_lr_unscaled():
    frozen, live = tiny(), tiny()
    optimizer = AdaBound([{"params": [frozen], "lr": 0.0}, {"params": [live]}], lr=1e-3, gamma=0.1)
    for t in range(6):
        if t == 3:
            optimizer.param_groups[0]["lr"] = 1e-3
        before = frozen.detach().clone(), live.detach().clone()
        for p in (frozen, live):
            p.grad = torch.tensor([0.2 + t, -1.0], dtype=torch.float64)
        optimizer.step()
        frozen_delta, live_delta = frozen.detach() - before[0], live.detach() - before[1]
        if t < 3:
            assert torch.equal(frozen_delta, torch.zeros(2, dtype=torch.float64))
        else:  # same moments and steps, lr / base_lr = 1 for the live group: the same update
            torch.testing.assert_close(frozen_delta, live_delta, atol=0, rtol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_final_lr_0_clips_every_step_to_zero(foreach):
    param = tiny()
    optimizer = AdaBound([param], final_lr=0.0, foreach=foreach)
    for _ in range(3):
        param.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
        optimizer.step()
    assert param.tolist() == P0
    torch.testing.assert_close(optimizer.state[param]["exp_avg"], torch.tensor([1.0, -2.0]).double() * (1 - 0.9**3))


@pytest.mark.parametrize("foreach", [False, True])
def test_amsbound_normalises_by_the_running_maximum(foreach):
    b2 = 0.999
    param = tiny()
    optimizer = AdaBound([param], amsbound=True, foreach=foreach)
    v, v_max = [0.0, 0.0], [0.0, 0.0]
    for grad in ([3.0, 0.1], [0.0, 0.2], [0.1, 0.0]):
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        v = [b2 * x + (1 - b2) * g * g for x, g in zip(v, grad)]
        v_max = [max(a, b) for a, b in zip(v_max, v)]
    state = optimizer.state[param]
    torch.testing.assert_close(state["exp_avg_sq"], torch.tensor(v, dtype=torch.float64), atol=0, rtol=1e-15)
    torch.testing.assert_close(state["max_exp_avg_sq"], torch.tensor(v_max, dtype=torch.float64), atol=0, rtol=1e-15)
    assert (state["max_exp_avg_sq"] > state["exp_avg_sq"]).all()


def test_defaults_match_the_reference():
    group = AdaBound([tiny()]).param_groups[0]
    ref_group = reference([tiny()]).param_groups[0]
    for key in ("lr", "betas", "final_lr", "gamma", "eps", "weight_decay", "amsbound"):
        assert group[key] == ref_group[key], key
