"""Lookahead checks beyond the shared table: a sync computed by hand, LR schedulers, checkpoints mid-cycle, lazy
slow weights, param groups and the alpha limits."""

import copy
import io

import pytest
import torch

from adamlab.optim.hybrid_adam_sgd import HybridAdamSGD
from adamlab.optim.lookahead import Lookahead

G = torch.tensor([0.5, -1.0], dtype=torch.float64)
P0 = torch.tensor([1.0, -2.0], dtype=torch.float64)


def sgd_lookahead(k=3, alpha=0.5, foreach=None, lr=0.1):
    p = P0.clone().requires_grad_()
    return p, Lookahead(torch.optim.SGD([p], lr=lr), k=k, alpha=alpha, foreach=foreach)


def random_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in ((3, 2), (5,))]


def set_random_grads(params, step):
    gen = torch.Generator().manual_seed(500 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("foreach", [False, True])
def test_sync_after_k_steps_by_hand(foreach):
    p, optimizer = sgd_lookahead(k=3, alpha=0.5, foreach=foreach)
    # fast weights after t inner SGD steps from the last sync: start - t * lr * g
    expected = {
        1: P0 - 0.1 * G,
        2: P0 - 0.2 * G,
        3: P0 + 0.5 * (-0.3 * G),  # slow += alpha (fast - slow), fast = slow
        4: P0 - 0.15 * G - 0.1 * G,
        5: P0 - 0.15 * G - 0.2 * G,
        6: P0 - 0.15 * G + 0.5 * (-0.3 * G),
    }
    for t in range(1, 7):
        p.grad = G.clone()
        optimizer.step()
        torch.testing.assert_close(p.detach(), expected[t], atol=1e-15, rtol=0)
        slow = optimizer.state[p]["slow_param"]
        torch.testing.assert_close(slow, expected[3 * (t // 3)] if t >= 3 else P0, atol=1e-15, rtol=0)
        assert optimizer.param_groups[0]["lookahead_step"] == t


def test_lambda_lr_drives_the_inner_optimizer():
    p, optimizer = sgd_lookahead(k=5)
    assert optimizer.param_groups is optimizer.optimizer.param_groups
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    for t in range(1, 4):
        before = p.detach().clone()
        p.grad = G.clone()
        optimizer.step()
        torch.testing.assert_close(p.detach() - before, -0.1 * 0.5 ** (t - 1) * G, atol=1e-15, rtol=0)
        scheduler.step()
        assert optimizer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**t, abs=1e-18)


def test_one_cycle_lr_finds_the_inner_betas():
    params = random_params()
    optimizer = Lookahead(torch.optim.Adam(params, lr=1e-2), k=2)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["lookahead_k"] == 2
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    for step in range(3):
        set_random_grads(params, step)
        optimizer.step()
        scheduler.step()
    group = optimizer.optimizer.param_groups[0]
    assert group["lr"] == scheduler.get_last_lr()[0] and group["betas"][0] < 0.95  # momentum cycled down


INNER = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "hybrid_adam_sgd": lambda params: HybridAdamSGD(params, lr=1e-2, transition_steps=5),
}


@pytest.mark.parametrize("inner", INNER)
def test_state_dict_round_trip_mid_cycle(inner):
    straight_params = random_params()
    straight = Lookahead(INNER[inner](straight_params), k=3, alpha=0.6)
    for step in range(8):
        set_random_grads(straight_params, step)
        straight.step()

    first_params = random_params()
    first = Lookahead(INNER[inner](first_params), k=3, alpha=0.6)
    for step in range(4):  # one step into the second cycle
        set_random_grads(first_params, step)
        first.step()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed_params = [p.detach().clone().requires_grad_() for p in first_params]
    resumed = Lookahead(INNER[inner](resumed_params), k=3, alpha=0.6)
    resumed.load_state_dict(torch.load(buffer))
    assert resumed.param_groups is resumed.optimizer.param_groups
    assert resumed.param_groups[0]["lookahead_step"] == 4
    for step in range(4, 8):
        set_random_grads(resumed_params, step)
        resumed.step()

    for p, q in zip(straight_params, resumed_params):
        assert torch.equal(p, q)
        assert torch.equal(straight.state[p]["slow_param"], resumed.state[q]["slow_param"])
        for key, value in straight.optimizer.state[p].items():
            other = resumed.optimizer.state[q][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    assert resumed.param_groups[0]["lookahead_step"] == 8


def test_alpha_one_is_the_inner_optimizer():
    wrapped_params, plain_params = random_params(), random_params()
    wrapped = Lookahead(torch.optim.Adam(wrapped_params, lr=1e-2), k=2, alpha=1.0)
    plain = torch.optim.Adam(plain_params, lr=1e-2)
    for step in range(7):
        set_random_grads(wrapped_params, step)
        set_random_grads(plain_params, step)
        wrapped.step()
        plain.step()
    for p, q in zip(wrapped_params, plain_params):
        assert torch.equal(p, q)


def test_alpha_zero_returns_to_the_start_every_k_steps():
    p, optimizer = sgd_lookahead(k=4, alpha=0.0)
    for t in range(1, 9):
        p.grad = G.clone()
        optimizer.step()
        assert torch.equal(p.detach(), P0) == (t % 4 == 0)


def test_closure_takes_slow_weights_before_the_first_inner_step():
    # The gradients exist only inside the closure, yet the slow weights must be the values before step 1.
    closure_params, plain_params = random_params(), random_params()
    with_closure = Lookahead(torch.optim.Adam(closure_params, lr=1e-2), k=3)
    plain = Lookahead(torch.optim.Adam(plain_params, lr=1e-2), k=3)
    for step in range(6):

        def closure(step=step):
            with_closure.zero_grad()
            set_random_grads(closure_params, step)
            return torch.tensor(float(step))

        assert with_closure.step(closure).item() == step
        set_random_grads(plain_params, step)
        plain.step()
    for p, q in zip(closure_params, plain_params):
        assert torch.equal(p, q)
        assert torch.equal(with_closure.state[p]["slow_param"], plain.state[q]["slow_param"])


@pytest.mark.parametrize("foreach", [False, True])
def test_a_parameter_joins_the_cycle_at_its_first_gradient(foreach):
    early, late = P0.clone().requires_grad_(), P0.clone().requires_grad_()
    optimizer = Lookahead(torch.optim.SGD([early, late], lr=0.1), k=3, alpha=0.5, foreach=foreach)
    early.grad = G.clone()
    optimizer.step()
    assert late not in optimizer.state  # no gradient yet: no slow copy
    for _ in range(2):
        early.grad, late.grad = G.clone(), G.clone()
        optimizer.step()
    # step 3 syncs both: late moved for 2 inner steps from its untouched start, which is its slow weight
    torch.testing.assert_close(late.detach(), P0 + 0.5 * (-0.2 * G), atol=1e-15, rtol=0)
    torch.testing.assert_close(early.detach(), P0 + 0.5 * (-0.3 * G), atol=1e-15, rtol=0)


def test_sync_includes_parameters_without_a_gradient_at_the_sync_step():
    p, optimizer = sgd_lookahead(k=3, alpha=0.5)
    for t in range(3):
        p.grad = G.clone() if t < 2 else None
        optimizer.step()
    torch.testing.assert_close(p.detach(), P0 + 0.5 * (-0.2 * G), atol=1e-15, rtol=0)


def test_add_param_group_starts_its_own_cycle():
    p, optimizer = sgd_lookahead(k=3, alpha=0.5)
    q = P0.clone().requires_grad_()
    for _ in range(2):
        p.grad = G.clone()
        optimizer.step()
    optimizer.add_param_group({"params": [q], "lr": 0.2})
    assert optimizer.optimizer.param_groups[1]["params"] == [q] and optimizer.param_groups[1]["momentum"] == 0
    for _ in range(3):
        p.grad, q.grad = G.clone(), G.clone()
        optimizer.step()
    assert [group["lookahead_step"] for group in optimizer.param_groups] == [5, 3]
    torch.testing.assert_close(q.detach(), P0 + 0.5 * (-0.6 * G), atol=1e-15, rtol=0)


def test_zero_grad_reaches_the_inner_parameters():
    p, optimizer = sgd_lookahead()
    p.grad = G.clone()
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros_like(p))
    optimizer.zero_grad()
    assert p.grad is None


def test_deepcopy_keeps_the_inner_optimizer_and_slow_weights():
    params = random_params()
    optimizer = Lookahead(torch.optim.Adam(params, lr=1e-2), k=3)
    for step in range(4):
        set_random_grads(params, step)
        optimizer.step()
    twin = copy.deepcopy(optimizer)
    twin_params = twin.param_groups[0]["params"]
    assert twin.param_groups is twin.optimizer.param_groups and twin_params[0] is not params[0]
    for step in range(4, 7):
        set_random_grads(params, step)
        set_random_grads(twin_params, step)
        optimizer.step()
        twin.step()
    for p, q in zip(params, twin_params):
        assert torch.equal(p, q)


def test_invalid_arguments_raise():
    inner = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        Lookahead([torch.zeros(2, requires_grad=True)])
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match=r"Invalid k\b"):
            Lookahead(inner, k=k)
    for alpha in (-0.1, 1.01, float("nan"), None):
        with pytest.raises(ValueError, match="alpha"):
            Lookahead(inner, alpha=alpha)
    Lookahead(inner, k=1, alpha=0.0)
    Lookahead(inner, alpha=1)
