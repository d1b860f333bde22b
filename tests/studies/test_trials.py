"""Trial keys: a hash of what makes a run that run, stable across processes and blind to bookkeeping."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import adamlab.cli.study  # noqa: F401  (registers the study commands)
from adamlab.cli.app import app
from adamlab.models import LoraSettings
from adamlab.studies import expand_trials, parse_spec, trial_key
from adamlab.studies.trials import estimation_config
from adamlab.training import TrainConfig, setup
from adamlab.training.lr_source import LR_METHODS, LRMethod

from .tiny import TINY_SPEC

MANY_ARMS = TINY_SPEC.replace("seeds: [0, 1]", "seeds: [0, 1, 2]").replace("trials_per_arm: 3", "trials_per_arm: 4") + """\
  - name: lion
    optimizer: lion
    lr: [1e-4, 3e-4]
    schedules: [constant, linear]
"""

KEYS_IN_A_FRESH_PROCESS = """
import json, sys
from adamlab.studies import expand_trials, parse_spec
spec = parse_spec(sys.stdin.read(), "study.yaml")
print(json.dumps([t.key for t in expand_trials(spec, sys.argv[1])]))
"""


def test_keys_are_unique_and_name_the_trial_folder(tmp_path):
    trials = expand_trials(parse_spec(MANY_ARMS, "study.yaml"), tmp_path)
    assert len(trials) == 3 * (1 + 1 + 4)
    assert len({t.key for t in trials}) == len(trials)
    assert all(t.config.out == str(tmp_path / "trials" / t.key) for t in trials)
    assert [t.position for t in trials] == list(range(len(trials)))


def test_keys_and_order_are_the_same_in_another_process_and_another_folder(tmp_path):
    here = [t.key for t in expand_trials(parse_spec(MANY_ARMS, "study.yaml"), tmp_path / "a")]
    there = subprocess.run([sys.executable, "-c", KEYS_IN_A_FRESH_PROCESS, str(tmp_path / "b")], input=MANY_ARMS,
                           capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert json.loads(there.stdout) == here


def test_renaming_an_arm_keeps_its_keys(tmp_path):
    before = expand_trials(parse_spec(TINY_SPEC, "study.yaml"), tmp_path)
    after = expand_trials(parse_spec(TINY_SPEC.replace("adamw-cosine", "decoupled"), "study.yaml"), tmp_path)
    assert [t.key for t in before] == [t.key for t in after]


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, dict):
        return {**value, "changed": 1}
    if isinstance(value, LoraSettings):
        return dataclasses.replace(value, r=value.r + 1)
    if value is None:
        return 7
    raise TypeError(f"no change defined for {value!r}")


BASE = TrainConfig(model="tiny-llama", task="ag_news", out="/tmp/a", optimizer="adamw", optimizer_args={"eps": 1e-8},
                   schedule="cosine", schedule_args={"min_ratio": 0.1}, task_args={"prompt_style": "default"})


@pytest.mark.parametrize("name", sorted(BASE.identity()))
def test_changing_any_identity_field_changes_the_key(name):
    changed = dataclasses.replace(BASE, **{name: _changed(getattr(BASE, name))})
    assert trial_key(changed) != trial_key(BASE)


@pytest.mark.parametrize("name,value", [("out", "/elsewhere"), ("checkpoint_every", 7), ("keep_checkpoints", 5),
                                        ("trackers", ["tensorboard"])])
def test_bookkeeping_fields_keep_the_key(name, value):
    assert trial_key(dataclasses.replace(BASE, **{name: value})) == trial_key(BASE)


def test_dds_learning_rates_are_multiples_of_one_estimate_per_model_and_task(tmp_path):
    spec = parse_spec(TINY_SPEC.replace("lr: 1e-2", "lr: dds x0.5, x2"), tmp_path / "tiny.yaml")
    trials = expand_trials(spec, tmp_path)
    estimates = {json.dumps(t.stepsize_estimate["alpha"]) for t in trials}
    assert len(estimates) == 1, "one estimate per model x task, shared by every arm and seed"
    alpha = trials[0].stepsize_estimate["alpha"]
    assert trials[0].stepsize_estimate["source"] == "estimated" and alpha > 0
    assert sorted({t.config.lr / alpha for t in trials}) == pytest.approx([0.5, 2.0])
    assert trials[0].stepsize_estimate["T"] == 3  # the theorem's horizon: the study's steps


def test_a_saved_dds_estimate_is_reused_while_its_configuration_holds(tmp_path, monkeypatch):
    spec = parse_spec(TINY_SPEC.replace("lr: 1e-2", "lr: dds x0.5, x2"), tmp_path / "tiny.yaml")
    calls = []
    monkeypatch.setitem(LR_METHODS, "dds", LRMethod("dds", "a stand-in", lambda config, inputs, progress:
                                                    calls.append(config) or {"alpha": 1e-3}, lambda r: r["alpha"]))
    first = expand_trials(spec, tmp_path, estimates=tmp_path / "stepsize")
    again = expand_trials(spec, tmp_path, estimates=tmp_path / "stepsize")
    assert len(calls) == 1 and [t.key for t in again] == [t.key for t in first]
    assert len(list((tmp_path / "stepsize").glob("*.json"))) == 1
    longer = parse_spec(TINY_SPEC.replace("lr: 1e-2", "lr: dds x0.5, x2").replace("steps: 3", "steps: 4"),
                        tmp_path / "tiny.yaml")
    expand_trials(longer, tmp_path, estimates=tmp_path / "stepsize")
    assert len(calls) == 2, "another horizon is another estimate"


def test_validation_loads_no_model_and_lists_the_estimates_still_to_make(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("validation loaded a model")

    monkeypatch.setattr(setup, "load_model", no_model)
    monkeypatch.chdir(tmp_path)  # validate's study folder is studies/runs/<name>, under the working directory
    text = TINY_SPEC.replace("lr: 1e-2", "lr: dds x0.5, x2")
    spec = parse_spec(text, "tiny.yaml")
    estimates = tmp_path / "studies" / "runs" / "tiny" / "stepsize"
    trials = expand_trials(spec, tmp_path, estimates=estimates, run_estimates=False)
    assert len(trials) == 8 and {(t.key, t.lr) for t in trials} == {(None, None)}
    assert {t.stepsize_estimate["source"] for t in trials} == {"pending"}
    (tmp_path / "tiny.yaml").write_text(text)
    result = CliRunner().invoke(app, ["validate", "tiny.yaml"])
    assert result.exit_code == 0, result.output
    assert "dds step size for tiny-llama on ag_news: to be estimated when the sweep starts" in result.output

    # Once made (here: written as the sweep would), the estimate is read back, still without a model.
    config = estimation_config(spec, spec.arms[0], "tiny-llama", spec.tasks[0], "dds")
    estimates.mkdir(parents=True)
    (estimates / f"{trial_key(config)}.json").write_text(json.dumps({"alpha": 0.25}))
    trials = expand_trials(spec, tmp_path, estimates=estimates, run_estimates=False)
    assert sorted({t.lr for t in trials}) == [0.125, 0.5] and all(t.key for t in trials)
    result = CliRunner().invoke(app, ["validate", "tiny.yaml"])
    assert "dds step size for tiny-llama on ag_news: α = 0.25 (estimated)" in result.output
