"""When training turns the fused optimizer step on: ``adamlab.optim.fused_optimizer_args`` and its TrainConfig field."""

from __future__ import annotations

import pytest
import torch

from adamlab.optim import create_optimizer, fused_optimizer_args
from adamlab.optim.fused import FUSED_MIN_ELEMENTS
from adamlab.training import TrainConfig

SMALL = torch.nn.Linear(8, 8)  # a LoRA-sized step: the compile would never pay back
LARGE = torch.nn.Linear(2048, 2048)  # 4.2M elements, a full fine-tune's share of the step
assert sum(p.numel() for p in LARGE.parameters()) >= FUSED_MIN_ELEMENTS > sum(p.numel() for p in SMALL.parameters())


@pytest.mark.parametrize("name", ["adabelief", "lion", "ldadam", "adamw"])
def test_auto_turns_fused_on_for_large_steps_only(name: str) -> None:
    assert fused_optimizer_args(name, LARGE, None, {}) == {"fused": True}
    assert fused_optimizer_args(name, SMALL, None, {}) == {}


def test_explicit_choices_win() -> None:
    assert fused_optimizer_args("yogi", SMALL, True, {}) == {"fused": True}
    assert fused_optimizer_args("yogi", LARGE, False, {}) == {}
    assert fused_optimizer_args("yogi", LARGE, None, {"foreach": True}) == {}  # the user picked a path
    assert fused_optimizer_args("yogi", LARGE, True, {"fused": False}) == {}
    assert fused_optimizer_args("adamw_fused", LARGE, None, {}) == {}  # the name already implies it
    optimizer = create_optimizer("came", SMALL, lr=1e-3, **fused_optimizer_args("came", SMALL, True, {}))
    assert all(group["fused"] for group in optimizer.param_groups)


def test_asking_for_fused_without_a_fused_path_lists_those_with_one() -> None:
    with pytest.raises(ValueError, match=r"'lookahead' has no fused step; these do: .*adabelief.*lion"):
        fused_optimizer_args("lookahead", SMALL, True, {})
    assert fused_optimizer_args("lookahead", LARGE, None, {}) == {}


def test_train_config_checks_the_choice_before_any_work() -> None:
    config = TrainConfig(model="tiny-llama", task="sst2", out="unused", optimizer="lookahead", fused_optimizer=True)
    with pytest.raises(ValueError, match="no fused step"):
        config.validate()
    TrainConfig(model="tiny-llama", task="sst2", out="unused", optimizer="lion", fused_optimizer=True).validate()


def test_a_run_resumes_under_either_path() -> None:
    """fused and foreach are the same update: switching paths on resume is the same run."""
    fused = TrainConfig(model="tiny-llama", task="sst2", out="a", optimizer="lion", fused_optimizer=True)
    foreach = TrainConfig(model="tiny-llama", task="sst2", out="a", optimizer="lion", fused_optimizer=False)
    assert fused.identity() == foreach.identity()
