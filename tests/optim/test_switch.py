"""Switch: phases run as by hand, state carried only where it means the same, schedules, resume mid-phase."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adamlab.models import LoraSettings
from adamlab.optim import Switch, create_optimizer
from adamlab.training import TrainConfig, train


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1)).double()


def batch(step):
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    return x, x.sum(1, keepdim=True).sin()


def train_steps(optimizer, model, steps, start=0, scheduler=None):
    for step in range(start, start + steps):
        optimizer.zero_grad()
        x, y = batch(step)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def three_phases(model):
    params = list(model.parameters())
    return [torch.optim.SGD(params, lr=0.1, momentum=0.9), torch.optim.Adam(params, lr=1e-2),
            torch.optim.AdamW(params, lr=5e-3, weight_decay=0.1)]


def test_three_phases_equal_the_phases_run_by_hand():
    """SGD -> Adam resets (different state); Adam -> AdamW takes Adam's moments and step counts over."""
    switched_model, hand_model = make_model(), make_model()
    switch = Switch(three_phases(switched_model), milestones=[4, 9])
    train_steps(switch, switched_model, 14)

    sgd, adam, adamw = three_phases(hand_model)
    train_steps(sgd, hand_model, 4)
    train_steps(adam, hand_model, 5, start=4)
    for p in hand_model.parameters():
        adamw.state[p] = adam.state[p]
    train_steps(adamw, hand_model, 5, start=9)

    for a, b in zip(switched_model.parameters(), hand_model.parameters()):
        assert torch.equal(a, b)
    assert [switch.phase(t) for t in (0, 3, 4, 8, 9, 100)] == [0, 0, 1, 1, 2, 2]
    adamw_state = switch.optimizers[2].state[next(switched_model.parameters())]
    assert adamw_state["step"].item() == 10 and not switch.optimizers[1].state  # Adam's state moved over


def test_carry_false_resets_at_every_switch():
    switched_model, hand_model = make_model(), make_model()
    train_steps(Switch(three_phases(switched_model), milestones=[4, 9], carry=False), switched_model, 14)
    sgd, adam, adamw = three_phases(hand_model)
    train_steps(sgd, hand_model, 4)
    train_steps(adam, hand_model, 5, start=4)
    train_steps(adamw, hand_model, 5, start=9)
    for a, b in zip(switched_model.parameters(), hand_model.parameters()):
        assert torch.equal(a, b)


def test_a_schedule_on_the_switch_scales_each_phase_by_its_own_base_lr():
    model = make_model()
    switch = Switch(three_phases(model), milestones=[4, 9])
    scheduler = torch.optim.lr_scheduler.LambdaLR(switch, lambda step: 0.5**step)
    train_steps(switch, model, 12, scheduler=scheduler)
    # each phase's lr as of its last step: 3, 8 and 11
    lrs = [group["lr"] for group in (switch.optimizers[i].param_groups[0] for i in range(3))]
    assert lrs[0] == pytest.approx(0.1 * 0.5**3) and lrs[1] == pytest.approx(1e-2 * 0.5**8)
    assert lrs[2] == pytest.approx(5e-3 * 0.5**11)


def test_resume_in_the_second_phase_is_bit_identical(tmp_path):
    straight_model = make_model()
    straight = Switch(three_phases(straight_model), milestones=[4, 9])
    straight_scheduler = torch.optim.lr_scheduler.LambdaLR(straight, lambda step: 1 / (1 + step))
    train_steps(straight, straight_model, 14, scheduler=straight_scheduler)

    model = make_model()
    first = Switch(three_phases(model), milestones=[4, 9])
    scheduler = torch.optim.lr_scheduler.LambdaLR(first, lambda step: 1 / (1 + step))
    train_steps(first, model, 6, scheduler=scheduler)  # two steps into Adam
    torch.save({"model": model.state_dict(), "optimizer": first.state_dict(), "scheduler": scheduler.state_dict()},
               tmp_path / "checkpoint.pt")

    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed_model = make_model(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = Switch(three_phases(resumed_model), milestones=[4, 9])
    resumed_scheduler = torch.optim.lr_scheduler.LambdaLR(resumed, lambda step: 1 / (1 + step))
    resumed.load_state_dict(saved["optimizer"])
    resumed_scheduler.load_state_dict(saved["scheduler"])
    assert resumed.completed_steps == 6 and resumed.phase() == 1
    train_steps(resumed, resumed_model, 8, start=6, scheduler=resumed_scheduler)
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_create_optimizer_builds_phases_from_registry_names():
    model = make_model()
    switch = create_optimizer("switch", model, lr=1e-3, weight_decay=0.01, milestones=[3],
                              phases=[{"name": "sgd", "momentum": 0.9, "lr": 0.1}, {"name": "adamw"}])
    sgd, adamw = switch.optimizers
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adamw, torch.optim.AdamW)
    assert sgd.param_groups[0]["lr"] == 0.1 and adamw.param_groups[0]["lr"] == 1e-3
    assert adamw.param_groups[0]["weight_decay"] == 0.01 and adamw.param_groups[1]["weight_decay"] == 0.0
    lr_free = create_optimizer("switch", model, lr=1e-3, milestones=[2], phases=[
        {"name": "adamw"}, {"name": "adafactor_hf", "lr": None, "relative_step": True}])
    train_steps(lr_free, model, 4)
    assert lr_free.optimizers[1].param_groups[0]["lr"] is None


@pytest.mark.parametrize(
    "hparams,match",
    [
        (dict(), "switch needs phases"),
        (dict(phases=[{"name": "adamw"}]), "two or more"),
        (dict(phases=[{"name": "adamw"}, {"optimizer": "sgd"}]), "registry name"),
        (dict(phases=[{"name": "adamw"}, {"name": "switch"}], milestones=[2]), "cannot be a switch"),
        (dict(phases=[{"name": "adamw"}, {"name": "sgd"}]), "milestones"),
        (dict(phases=[{"name": "adamw"}, {"name": "nope"}], milestones=[2]), "Unknown optimizer 'nope'"),
        (dict(phases=[{"name": "adamw"}, {"name": "adam_mini"}], milestones=[2]), "group them alike"),
    ],
)
def test_bad_phases_fail_at_construction(hparams, match):
    with pytest.raises(ValueError, match=match):
        create_optimizer("switch", make_model(), lr=1e-3, **hparams)


def test_trains_through_the_training_loop(tmp_path):
    phases = [{"name": "sgd", "momentum": 0.9}, {"name": "adamw"}]
    config = TrainConfig(out=str(tmp_path), model="tiny-llama", task="ag_news", train_limit=16, eval_limit=4,
                         max_seq_len=64, batch_size=4, lora=LoraSettings(r=4, alpha=8), lr=1e-3, steps=4,
                         optimizer="switch", optimizer_args={"phases": phases, "milestones": [2]})
    result = train(config, show_progress=False)
    assert result.status == "done"
