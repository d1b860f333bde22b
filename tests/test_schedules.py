import math

import pytest
import torch

from adamlab.schedules import (
    available_schedules,
    cosine_restarts,
    create_scheduler,
    get_schedule,
)

T = 100


@pytest.mark.parametrize(
    "name,kwargs,t,expected",
    [
        ("constant", {}, 57, 1.0),
        ("linear", {}, 0, 1.0),
        ("linear", {}, 25, 0.75),
        ("linear", {}, 100, 0.0),
        ("linear", {}, 250, 0.0),  # past the horizon it holds its final value
        ("cosine", {}, 0, 1.0),
        ("cosine", {}, 50, 0.5),
        ("cosine", {}, 25, (1 + math.cos(math.pi / 4)) / 2),
        ("cosine", {"min_ratio": 0.1}, 100, 0.1),
        ("cosine", {"min_ratio": 0.1}, 50, 0.1 + 0.9 * 0.5),
        ("exponential", {"gamma": 0.9}, 3, 0.9**3),
        ("sqrt", {}, 3, 0.5),
        ("inverse_time", {"k": 0.5}, 4, 1 / 3),
        ("step", {"step_size": 30, "gamma": 0.5}, 29, 1.0),
        ("step", {"step_size": 30, "gamma": 0.5}, 60, 0.25),
        ("polynomial", {"power": 2.0}, 50, 0.25),
        ("wsd", {"decay_ratio": 0.2}, 79, 1.0),
        ("wsd", {"decay_ratio": 0.2}, 90, 0.5),
        ("wsd", {"decay_ratio": 0.2, "decay_shape": "sqrt"}, 85, 0.5),
        ("wsd", {"decay_ratio": 0.2, "min_ratio": 0.1}, 100, 0.1),
    ],
)
def test_formulas(name, kwargs, t, expected):
    assert get_schedule(name, T, **kwargs)(t) == pytest.approx(expected, abs=1e-15)


def test_warmup_then_the_schedule_on_the_remaining_steps():
    schedule = get_schedule("linear", total_steps=110, warmup_steps=10)
    assert [schedule(t) for t in range(3)] == [0.1, 0.2, 0.3]
    assert schedule(9) == 1.0
    assert schedule(10) == 1.0  # the named schedule starts afresh after warmup
    assert schedule(60) == pytest.approx(0.5)
    assert schedule(110) == 0.0


def test_warmup_ratio_is_a_fraction_of_total_steps():
    assert get_schedule("cosine", 200, warmup_steps=0.1)(19) == get_schedule("cosine", 200, warmup_steps=20)(19) == 1.0
    assert get_schedule("cosine", 200, warmup_steps=0.1)(9) == pytest.approx(0.5)


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_cosine_restarts_equals_torch_sgdr(t_mult):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=1.0)
    torch_sgdr = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=7, T_mult=t_mult, eta_min=0.1)
    ours = cosine_restarts(7, t_mult, min_ratio=0.1)
    for t in range(200):
        assert ours(t) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12), t
        optimizer.step()
        torch_sgdr.step()


@pytest.mark.parametrize(
    "name,torch_scheduler",
    [
        ("exponential", lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.97)),
        ("step", lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)),
        ("cosine", lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T)),
    ],
)
def test_equals_torch_schedulers(name, torch_scheduler):
    kwargs = {"exponential": {"gamma": 0.97}, "step": {"step_size": 7, "gamma": 0.5}, "cosine": {}}[name]
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch_scheduler(optimizer)
    ours = get_schedule(name, T, **kwargs)
    for t in range(T):
        assert ours(t) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12), t
        optimizer.step()
        scheduler.step()


def test_hugging_face_names_are_aliases():
    assert get_schedule("cosine_with_min_lr", T, min_lr_rate=0.1)(T) == pytest.approx(0.1)
    assert get_schedule("constant_with_warmup", T, warmup_steps=4)(1) == 0.5
    assert get_schedule("warmup_stable_decay", T, decay_ratio=0.5)(75) == pytest.approx(0.5)
    cycles = get_schedule("cosine_with_restarts", T, num_cycles=4)
    assert cycles(25) == cycles(50) == 1.0 and cycles(12) < 1.0


def _lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("name", available_schedules())
def test_resumed_scheduler_gives_the_exact_lr(name):
    kwargs = {"exponential": {"gamma": 0.99}, "step": {"step_size": 9}, "cosine_restarts": {"t_0": 11}}.get(name, {})

    def fresh():
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4)
        return optimizer, create_scheduler(optimizer, name, T, warmup_steps=10, **kwargs)

    optimizer, scheduler = fresh()
    straight = _lrs(scheduler, optimizer, T)

    optimizer, scheduler = fresh()
    first = _lrs(scheduler, optimizer, 37)
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    optimizer, scheduler = fresh()
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    assert first + _lrs(scheduler, optimizer, T - 37) == straight


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: get_schedule("cosin", T), "Did you mean 'cosine'"),
        (lambda: get_schedule("cosine", 0), "total_steps"),
        (lambda: get_schedule("cosine", T, warmup_steps=T), "warmup_steps"),
        (lambda: get_schedule("cosine", T, warmup_steps=-1), "warmup_steps"),
        (lambda: get_schedule("cosine", T, min_ratio=1.5), "min_ratio"),
        (lambda: get_schedule("exponential", T, gamma=0.0), "gamma"),
        (lambda: get_schedule("exponential", T), "gamma"),
        (lambda: get_schedule("step", T, step_size=0), "step_size"),
        (lambda: get_schedule("wsd", T, decay_shape="cubic"), "decay_shape"),
        (lambda: get_schedule("linear", T, gama=0.1), "gama"),
    ],
)
def test_invalid_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
