"""AdaBelief-specific checks: hand-computed steps, eps inside s, rectification, weight-decay modes."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch

from adamlab.optim.adabelief import AdaBelief

P0 = [0.5, -1.0]
GRADS = [[0.1, -0.2], [0.3, 0.4]]


def tiny(values=P0):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def step_with(optimizer, param, grad):
    param.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.step()


def reference(params, **hparams):
    from adabelief_pytorch import AdaBelief as ReferenceAdaBelief

    with contextlib.redirect_stdout(io.StringIO()):  # the reference announces its options
        return ReferenceAdaBelief(params, print_change_log=False, **hparams)


@pytest.mark.parametrize("foreach", [False, True])
def test_first_two_plain_steps_by_hand(foreach):
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
    param = tiny()
    optimizer = AdaBelief([param], lr=lr, eps=eps, weight_decay=wd, rectify=False, foreach=foreach)
    theta, m, s = list(P0), [0.0, 0.0], [0.0, 0.0]
    for t, grad in enumerate(GRADS, start=1):
        step_with(optimizer, param, grad)
        for i, g in enumerate(grad):
            theta[i] *= 1 - lr * wd  # decoupled, scaled by lr
            m[i] = b1 * m[i] + (1 - b1) * g
            s[i] = b2 * s[i] + (1 - b2) * (g - m[i]) ** 2 + eps
            denom = math.sqrt(s[i] / (1 - b2**t)) + eps
            theta[i] -= lr / (1 - b1**t) * m[i] / denom
        torch.testing.assert_close(param.detach(), torch.tensor(theta, dtype=torch.float64), atol=1e-15, rtol=0)
        state = optimizer.state[param]
        assert state["step"] == t and isinstance(state["step"], int)
        torch.testing.assert_close(state["exp_avg_var"], torch.tensor(s, dtype=torch.float64), atol=1e-18, rtol=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
def test_eps_is_added_to_s_itself(foreach):
    eps, b2 = 1e-3, 0.9
    param = tiny()
    optimizer = AdaBelief([param], betas=(0.9, b2), eps=eps, foreach=foreach)
    step_with(optimizer, param, [0.0, 0.0])  # zero residual: s_1 = eps
    torch.testing.assert_close(optimizer.state[param]["exp_avg_var"], torch.full((2,), eps, dtype=torch.float64))
    step_with(optimizer, param, [0.0, 0.0])  # s_2 = b2 * eps + eps
    expected = torch.full((2,), b2 * eps + eps, dtype=torch.float64)
    torch.testing.assert_close(optimizer.state[param]["exp_avg_var"], expected)


@pytest.mark.parametrize("foreach", [False, True])
def test_rectified_steps_are_sgd_with_momentum_until_rho_reaches_5(foreach):
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-16
    grads = [[0.1 * t, -0.3 + 0.05 * t] for t in range(1, 8)]
    param = tiny()
    optimizer = AdaBelief([param], lr=lr, foreach=foreach)  # rectify and degenerated_to_sgd on by default
    theta, m, s = list(P0), [0.0, 0.0], [0.0, 0.0]
    rho_inf = 2 / (1 - b2) - 1
    for t, grad in enumerate(grads, start=1):
        step_with(optimizer, param, grad)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        assert (rho >= 5) == (t >= 6)  # beta2 = 0.999: five SGD-like steps
        for i, g in enumerate(grad):
            m[i] = b1 * m[i] + (1 - b1) * g
            s[i] = b2 * s[i] + (1 - b2) * (g - m[i]) ** 2 + eps
            if rho < 5:
                theta[i] -= lr / (1 - b1**t) * m[i]  # no denominator at all
            else:
                r = math.sqrt((1 - b2**t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                theta[i] -= lr * r / (1 - b1**t) * m[i] / (math.sqrt(s[i]) + eps)
        torch.testing.assert_close(param.detach(), torch.tensor(theta, dtype=torch.float64), atol=1e-14, rtol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_without_degenerated_to_sgd_only_weight_decay_moves_early(foreach):
    lr, wd = 1e-2, 0.5
    param = tiny()
    optimizer = AdaBelief([param], lr=lr, weight_decay=wd, degenerated_to_sgd=False, foreach=foreach)
    expected = torch.tensor(P0, dtype=torch.float64)
    for _ in range(5):  # steps 1-5: rho_t < 5
        step_with(optimizer, param, [1.0, -2.0])
        expected = expected * (1 - lr * wd)
        torch.testing.assert_close(param.detach(), expected, atol=1e-15, rtol=0)
    assert optimizer.state[param]["exp_avg"].abs().min() > 0  # the moments did advance
    before = param.detach().clone()
    step_with(optimizer, param, [1.0, -2.0])  # step 6: rho_t >= 5, the adaptive update starts
    assert not torch.allclose(param.detach(), before * (1 - lr * wd))


@pytest.mark.parametrize("fixed_decay", [False, True])
def test_decoupled_decay_scales_with_lr_unless_fixed(fixed_decay):
    lr, wd = 0.1, 0.2
    param = tiny()
    optimizer = AdaBelief([param], lr=lr, weight_decay=wd, fixed_decay=fixed_decay)
    step_with(optimizer, param, [0.0, 0.0])  # zero gradient: m stays 0, the update is the decay alone
    factor = 1 - wd if fixed_decay else 1 - lr * wd
    torch.testing.assert_close(param.detach(), torch.tensor(P0, dtype=torch.float64) * factor, atol=0, rtol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_l2_decay_enters_the_gradient_and_leaves_grad_untouched(foreach):
    lr, wd, b1 = 1e-2, 0.1, 0.9
    param = tiny()
    optimizer = AdaBelief([param], lr=lr, weight_decay=wd, weight_decouple=False, foreach=foreach)
    grad = [0.1, -0.2]
    step_with(optimizer, param, grad)
    effective = [g + wd * p for g, p in zip(grad, P0)]
    torch.testing.assert_close(
        optimizer.state[param]["exp_avg"], torch.tensor([(1 - b1) * g for g in effective], dtype=torch.float64)
    )
    # the reference adds the decay into p.grad in place; adamlab leaves the gradient as the user set it
    assert param.grad.tolist() == grad


def test_rectified_update_ignores_the_amsgrad_maximum():
    """As in adabelief-pytorch: with rectify, amsgrad maintains max_exp_avg_var but the step uses s_t."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(4, generator=gen, dtype=torch.float64) * (10.0 if t == 8 else 1.0) for t in range(20)]
    runs = {}
    for amsgrad in (False, True):
        for rectify in (False, True):
            param = torch.zeros(4, dtype=torch.float64, requires_grad=True)
            optimizer = AdaBelief([param], lr=1e-2, amsgrad=amsgrad, rectify=rectify, betas=(0.9, 0.99))
            for g in grads:
                param.grad = g.clone()
                optimizer.step()
            runs[amsgrad, rectify] = param.detach(), optimizer.state[param]
    assert torch.equal(runs[True, True][0], runs[False, True][0])
    assert not torch.allclose(runs[True, False][0], runs[False, False][0])
    state = runs[True, True][1]
    assert (state["max_exp_avg_var"] >= state["exp_avg_var"]).all()
    assert (state["max_exp_avg_var"] > state["exp_avg_var"]).any()  # the spike at step 9 is remembered


@pytest.mark.parametrize("foreach", [False, True])
def test_params_at_different_steps_split_between_rectified_and_sgd_updates(foreach):
    """A param that only starts getting gradients later is still in its SGD-like phase while the others
    are rectified; both kinds of update happen in the same step, as in the reference."""
    gen = torch.Generator().manual_seed(1)
    inits = [torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(3)]
    ours = [x.clone().requires_grad_() for x in inits]
    theirs = [x.clone().requires_grad_() for x in inits]
    optimizer = AdaBelief(ours, lr=1e-2, weight_decay=0.1, foreach=foreach)
    ref = reference(theirs, lr=1e-2, weight_decay=0.1)
    for t in range(12):
        grads = [torch.randn(3, generator=gen, dtype=torch.float64) for _ in inits]
        for params in (ours, theirs):
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = g.clone() if i == 0 or t >= 4 * i else None  # param 1 joins at t=4, param 2 at t=8
        optimizer.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
    assert [optimizer.state[p]["step"] for p in ours] == [12, 8, 4]


def test_defaults_match_the_reference():
    group = AdaBelief([tiny()]).param_groups[0]
    ref = reference([tiny()])
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert group[key] == ref.param_groups[0][key], key
    for key in ("weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd"):  # optimizer-wide there
        assert group[key] == getattr(ref, key), key
