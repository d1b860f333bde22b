"""Batch-size learning-rate scaling: alpha x sqrt(B / B0) (or B / B0), applied once where the lr is resolved and
recorded with the run, on the command line and in study specs."""

import json
import math

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.studies import SpecError, expand_trials, parse_spec
from adamlab.training import TrainConfig
from adamlab.training.lr_source import LRSource, resolve_lr

from ..studies.tiny import TINY_SPEC

PLANNED = dict(model="tiny-llama", task="ag_news", lr=1e-3, batch_size=16)


@pytest.mark.parametrize("rule,factor", [("sqrt", 2.0), ("linear", 4.0)])
def test_the_factor_is_applied_to_a_fixed_lr_and_recorded(rule, factor):
    config = TrainConfig(**PLANNED, lr_scaling=rule, base_batch_size=4)
    config.validate()
    lr, resolution = resolve_lr(config)
    assert lr == pytest.approx(1e-3 * factor) and resolution.lr == lr
    assert resolution.to_dict()["batch_scaling"] == {"rule": rule, "base_batch_size": 4, "batch_size": 16,
                                                     "factor": pytest.approx(factor), "unscaled_lr": 1e-3}


def test_no_scaling_leaves_the_lr_and_records_none():
    lr, resolution = resolve_lr(TrainConfig(**PLANNED))
    assert lr == 1e-3 and resolution.batch_scaling is None
    assert TrainConfig(**PLANNED, lr_scaling="sqrt", base_batch_size=9).lr_batch_factor == pytest.approx(4 / 3)


def test_an_estimated_lr_is_not_rescaled(tmp_path):
    # An estimate is made at the run's own batch size: read back from its cache, it comes out unscaled.
    cache = tmp_path / "estimate.json"
    cache.write_text(json.dumps({"suggested_lr": 3e-3}))
    config = TrainConfig(**PLANNED, lr_scaling="sqrt", base_batch_size=4)
    lr, resolution = resolve_lr(config, LRSource("range-test"), cache=cache)
    assert lr == 3e-3 and resolution.batch_scaling is None


@pytest.mark.parametrize("settings,reason", [
    ({"lr_scaling": "cubic", "base_batch_size": 4}, "lr_scaling must be one of sqrt, linear"),
    ({"lr_scaling": "sqrt"}, "needs base_batch_size"),
    ({"lr_scaling": "sqrt", "base_batch_size": 0}, "needs base_batch_size"),
    ({"base_batch_size": 4}, "only with lr_scaling"),
])
def test_bad_scaling_settings_are_refused(settings, reason):
    with pytest.raises(ValueError, match=reason):
        TrainConfig(**PLANNED, **settings).validate()


def test_train_applies_the_factor_to_every_step_and_records_it(tmp_path):
    args = ["train", "--model", "tiny-llama", "--task", "ag_news", "--steps", "2", "--batch-size", "4",
            "--train-limit", "16", "--eval-limit", "4", "--max-seq-len", "64", "--lora-r", "4", "--lora-alpha", "8",
            "--no-progress", "--lr", "1e-3", "--lr-scaling", "sqrt", "--base-batch-size", "1",
            "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["lr"]["lr"] == pytest.approx(2e-3) and record["lr"]["batch_scaling"]["factor"] == 2.0
    assert record["config"]["lr_scaling"] == "sqrt" and record["config"]["base_batch_size"] == 1
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [step["lr"] for step in steps] == pytest.approx([2e-3, 2e-3])


def test_a_study_sets_the_scaling_in_its_train_block(tmp_path):
    text = TINY_SPEC.replace("train: {limit: 32, checkpoint_every: 1}",
                             "train: {limit: 32, checkpoint_every: 1, lr_scaling: linear, base_batch_size: 2}")
    trials = expand_trials(parse_spec(text, "study.yaml"), tmp_path)
    config = trials[0].config
    assert (config.lr_scaling, config.base_batch_size, config.lr_batch_factor) == ("linear", 2, 2.0)
    assert math.isclose(resolve_lr(config)[0], 2e-2)
    with pytest.raises(SpecError, match="lr_scaling"):
        expand_trials(parse_spec(text.replace("lr_scaling: linear", "lr_scaling: 3"), "study.yaml"), tmp_path)


def test_unset_scaling_leaves_a_runs_identity_as_before():
    assert not {"lr_scaling", "base_batch_size"} & set(TrainConfig(**PLANNED).identity())
    assert TrainConfig(**PLANNED, lr_scaling="sqrt", base_batch_size=4).identity()["lr_scaling"] == "sqrt"


def test_adamlab_lr_states_the_batch_size_its_suggestion_is_for(tmp_path):
    args = ["lr", "--model", "tiny-llama", "--task", "ag_news", "--lora-r", "4", "--train-limit", "16",
            "--max-seq-len", "64", "--batch-size", "4", "--method", "range-test", "--range-steps", "6",
            "--no-progress", "--json", str(tmp_path / "lr.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "lr.json").read_text())["planned_batch_size"] == 4
    assert "for a run at batch size 4" in result.output
