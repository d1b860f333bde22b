"""The learning-rate range test."""

import math

import pytest
import torch

from adamlab.stepsize import lr_range_test

from .conftest import regression


def test_the_sweep_is_exponential_and_the_model_comes_back_unchanged():
    problem = regression(n=64)
    model = torch.nn.Sequential(problem.model, torch.nn.Dropout(0.1)).eval()
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    result = lr_range_test(model, problem.loss, list(range(64)), min_lr=1e-5, max_lr=1.0, num_steps=40,
                           batch_size=64)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and torch.equal(state, torch.get_rng_state())
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([10 ** (5 / 39)] * len(ratios))
    assert result.lrs[0] == pytest.approx(1e-5)
    assert min(result.lrs) <= result.suggested_lr <= result.lr_at_min_loss
    assert result.rule == "steepest" and result.to_dict()["method"] == "range_test"


def test_divergence_stops_the_test_early():
    problem = regression(n=32)
    result = lr_range_test(problem.model, problem.loss, list(range(32)), optimizer="sgd", min_lr=1e-3,
                           max_lr=1e4, num_steps=60, batch_size=32)
    assert result.stopped_early and len(result.losses) < 60
    assert result.lr_at_min_loss < 1e4 and math.isfinite(result.suggested_lr)


def test_the_tenth_of_the_minimum_rule():
    problem = regression(n=32)
    result = lr_range_test(problem.model, problem.loss, list(range(32)), num_steps=20, batch_size=8,
                           rule="min_div_10")
    assert result.suggested_lr == pytest.approx(result.lr_at_min_loss / 10) and result.rule == "min_div_10"


@pytest.mark.parametrize("change,message", [
    ({"min_lr": 0.0}, "min_lr"),
    ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr"),
    ({"num_steps": 1}, "num_steps"),
    ({"rule": "valley"}, "rule"),
    ({"optimizer": "adamm"}, "Unknown optimizer"),
])
def test_bad_settings_are_refused(change, message):
    problem = regression(n=4)
    with pytest.raises(ValueError, match=message):
        lr_range_test(problem.model, problem.loss, list(range(4)), **change)
