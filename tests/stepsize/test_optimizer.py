"""AdamDDS, the Python class, and adam_dds, the registry name the training layer gives a dds learning rate."""

import pytest
import torch

from adamlab.optim import available_optimizers, create_optimizer, param_groups, registry
from adamlab.stepsize import AdamDDS, by_lora_matrix, estimate_stepsize
from adamlab.training import estimate_for_training

from .conftest import regression


@pytest.fixture(scope="module")
def estimate():
    problem = regression(n=16)
    return estimate_stepsize(problem.model, problem.loss, list(range(16)), batch_size=4, horizon=100, max_iter=10,
                             groups=lambda name: name.split(".")[0])


def test_adam_dds_is_adam_with_a_dds_learning_rate_and_the_class_needs_an_estimate():
    assert "adam_dds" in available_optimizers() and registry.REGISTRY["adam_dds"].lr_source == "dds"
    assert type(create_optimizer("adam_dds", [torch.nn.Parameter(torch.zeros(2))], lr=1e-3)) is torch.optim.Adam
    with pytest.raises(ValueError, match="needs a step-size estimate"):
        AdamDDS([torch.nn.Parameter(torch.zeros(2))])


@pytest.mark.parametrize("multiplier", [0.5, 1.0, 2.0])
def test_the_learning_rate_is_the_multiplied_alpha_and_is_recorded(estimate, multiplier):
    optimizer = AdamDDS([torch.nn.Parameter(torch.zeros(2))], estimate=estimate, multiplier=multiplier)
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(estimate.alpha * multiplier)
    assert (group["dds_alpha"], group["multiplier"]) == (float(estimate.alpha), multiplier)
    assert optimizer.defaults["dds_alpha"] == float(estimate.alpha)


def test_it_steps_exactly_like_adam_at_that_rate(estimate):
    start = torch.randn(5, generator=torch.Generator().manual_seed(0))
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    dds = AdamDDS([ours], estimate, multiplier=2.0)
    adam = torch.optim.Adam([theirs], lr=estimate.alpha(2.0))
    for _ in range(3):
        for p, optimizer in ((ours, dds), (theirs, adam)):
            optimizer.zero_grad()
            (p**2).sum().backward()
            optimizer.step()
    assert torch.equal(ours, theirs)


def test_an_estimate_file_works_and_a_model_gets_decay_groups(estimate, tmp_path):
    path = estimate.save(tmp_path / "lr.json")
    model = regression(n=2).model
    optimizer = AdamDDS(param_groups(model, weight_decay=0.01), estimate=str(path))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    assert all(g["lr"] == pytest.approx(estimate.alpha) for g in optimizer.param_groups)
    with pytest.raises(FileNotFoundError):
        AdamDDS(model.parameters(), estimate=str(tmp_path / "missing.json"))


def test_groups_can_take_their_own_alpha(estimate):
    model = regression(n=2).model
    groups = [{"params": list(model.hidden.parameters()), "dds_group": "hidden"},
              {"params": list(model.out.parameters())}]
    optimizer = AdamDDS(groups, estimate, multiplier=0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(estimate.groups["hidden"].alpha * 0.5)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(estimate.alpha * 0.5)
    with pytest.raises(ValueError, match="no estimate"):
        AdamDDS([{"params": list(model.out.parameters()), "dds_group": "lora_A"}], estimate)
    with pytest.raises(ValueError, match="multiplier"):
        AdamDDS(model.parameters(), estimate, multiplier=0)


def test_a_group_without_curvature_has_no_step_size(tiny_lm):
    estimate = estimate_for_training(tiny_lm.model, "causal_lm", tiny_lm.encoded, tiny_lm.pad_id, batch_size=8,
                                     total_steps=10, samples=8, seed=0, max_iter=5, groups=by_lora_matrix,
                                     bootstrap=0)
    lora_a = [p for name, p in tiny_lm.model.named_parameters() if ".lora_A." in name]
    with pytest.raises(ValueError, match="no curvature"):
        AdamDDS([{"params": lora_a, "dds_group": "lora_A"}], estimate)
