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


# Every Hugging Face name adamlab computes the transformers way, with argument sets covering each keyword.
HF_CASES = {
    "constant_with_warmup": [{}],
    "cosine_with_restarts": [{}, {"num_cycles": 3}],
    "inverse_sqrt": [{}, {"timescale": 7}],
    "cosine_with_min_lr": [{"min_lr_rate": 0.1}, {"min_lr": 2e-5, "num_cycles": 0.75}],
    "cosine_warmup_with_min_lr": [{"min_lr_rate": 0.05}, {"min_lr": 1e-5, "warmup_lr_rate": 0.2}],
    "warmup_stable_decay": [
        {"num_decay_steps": 6},
        {"num_decay_steps": 9, "decay_type": "1-sqrt", "warmup_type": "cosine", "min_lr_ratio": 0.1},
        {"num_decay_steps": 5, "num_stable_steps": 4, "decay_type": "linear", "warmup_type": "1-sqrt"},
    ],
}


def test_every_hugging_face_name_is_covered():
    from transformers import SchedulerType

    followed_by_loss = {"reduce_lr_on_plateau", "greedy"}
    own_forms = {"linear", "cosine", "constant", "polynomial"}  # adamlab's names; see test_own_forms_vs_hugging_face
    assert {member.value for member in SchedulerType} == set(HF_CASES) | followed_by_loss | own_forms
    assert set(HF_CASES) <= set(available_schedules())


@pytest.mark.parametrize("name", sorted(HF_CASES))
@pytest.mark.parametrize("total,warmup", [(20, 0), (20, 4), (37, 1), (50, 10), (100, 33)])
def test_hugging_face_names_compute_what_transformers_does(name, total, warmup):
    from transformers import get_scheduler

    for kwargs in HF_CASES[name]:
        if "num_stable_steps" in kwargs and warmup + kwargs["num_stable_steps"] + kwargs["num_decay_steps"] > total:
            continue
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4)
        theirs = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                               scheduler_specific_kwargs=dict(kwargs))
        ours = create_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4), name, total, warmup,
                                **kwargs)
        # past the horizon too: what the schedule holds after its last step
        for t in range(total + 5):
            assert ours.lr_lambdas[0](t) == pytest.approx(theirs.lr_lambdas[0](t), rel=1e-12, abs=1e-15), (kwargs, t)


def test_inverse_sqrt_matches_the_issue_example():
    # T = 20, W = 4: transformers gives 1/sqrt(5/4) at step 5
    assert get_schedule("inverse_sqrt", 20, warmup_steps=4)(5) == pytest.approx(0.894427191)


def test_own_forms_vs_hugging_face():
    """adamlab's linear and cosine equal transformers' after warmup; only the warmup differs ((t + 1)/W vs t/W)."""
    from transformers import get_scheduler

    for name in ("linear", "cosine"):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        theirs = get_scheduler(name, optimizer, num_warmup_steps=8, num_training_steps=64).lr_lambdas[0]
        ours = get_schedule(name, 64, warmup_steps=8)
        assert [ours(t) for t in range(8, 64)] == pytest.approx([theirs(t) for t in range(8, 64)], abs=1e-15)
        assert [ours(t) for t in range(8)] == pytest.approx([theirs(t + 1) for t in range(8)], abs=1e-15)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: get_schedule("warmup_stable_decay", T), "num_decay_steps"),
        (lambda: get_schedule("warmup_stable_decay", T, decay_ratio=0.2, num_decay_steps=4), "decay_ratio"),
        (lambda: get_schedule("warmup_stable_decay", T, num_decay_steps=4, decay_type="cubic"), "decay_type"),
        (lambda: get_schedule("cosine_with_min_lr", T), "min_lr"),
        (lambda: get_schedule("cosine_with_min_lr", T, min_lr=1e-5), "base_lr"),
        (lambda: get_schedule("cosine_with_min_lr", T, min_lr=1e-5, min_lr_rate=0.1, base_lr=1e-3), "only one"),
        (lambda: get_schedule("reduce_lr_on_plateau", T), "follows the loss"),
    ],
)
def test_hugging_face_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("name", available_schedules())
def test_resumed_scheduler_gives_the_exact_lr(name):
    kwargs = {"exponential": {"gamma": 0.99}, "step": {"step_size": 9}, "cosine_restarts": {"t_0": 11},
              **{hf_name: cases[-1] for hf_name, cases in HF_CASES.items()}}.get(name, {})

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
