"""A study arm whose optimizer computes its own step size (HF Adafactor's relative_step) takes no lr: it expands to
trials with lr None, sweeps, is stored with a NULL lr and reports it as "own"."""

import json

import pytest
from typer.testing import CliRunner

import adamlab.cli.study  # noqa: F401  (registers the study commands)
from adamlab.cli.app import app
from adamlab.studies import Store, expand_trials, load_spec
from adamlab.studies.spec import SpecError

from .tiny import write_spec

OWN_LR_SPEC = """\
name: own-lr
description: an lr-free Adafactor arm beside AdamW
budget:
  search_space: adafactor computes its own step size; adamw at one lr
  trials_per_arm: 1
models: [tiny-llama]
tasks: [ag_news]
seeds: [0]
steps: 3
batch_size: 4
max_seq_len: 64
lora: {r: 4, alpha: 8}
train: {limit: 16}
eval: {limit: 8, batch_size: 8}
lr: 1e-3
arms:
  - name: adafactor-own
    optimizer: adafactor_hf
    hparams: {relative_step: true, scale_parameter: true, warmup_init: true}
  - name: adamw
    optimizer: adamw
"""

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_an_lr_free_arm_expands_to_one_trial_with_no_lr(tmp_path):
    spec = load_spec(write_spec(tmp_path, OWN_LR_SPEC))
    own, adamw = expand_trials(spec, tmp_path / "study", run_estimates=False)
    assert own.lr is None and own.config.lr is None and own.config.computes_own_lr and own.key is not None
    assert adamw.lr == adamw.config.lr == 1e-3
    assert str(spec.arms[0].lr) == "the optimizer's own" and spec.arms[0].configurations == 1


def test_an_lr_given_to_an_lr_free_arm_is_refused_at_its_line(tmp_path):
    text = OWN_LR_SPEC.replace("warmup_init: true}\n", "warmup_init: true}\n    lr: 1e-3\n")
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError, match="computes its own step size") as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}:20: arm 'adafactor-own'")
    assert run("validate", path).exit_code == 2


def test_an_lr_free_arm_sweeps_stores_null_and_reports_own(tmp_path):
    spec = write_spec(tmp_path, OWN_LR_SPEC)
    assert run("validate", spec).exit_code == 0
    study_dir = tmp_path / "study"
    result = run("sweep", spec, "--out", study_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    store = Store.open(study_dir)
    assert {t.status for t in store.trials()} == {"done"}
    lrs = {row["arm"]: row["lr"] for row in store.db.execute("SELECT arm, lr FROM trials")}
    assert lrs == {"adafactor-own": None, "adamw": 1e-3}
    own = next(t for t in store.trials() if t.arm == "adafactor-own")
    record = json.loads((study_dir / "trials" / own.key / "result.json").read_text())
    assert record["config"]["lr"] is None and record["lr"]["method"] == "optimizer"

    summary = json.loads((study_dir / "report" / "summary.json").read_text())
    rows = {row["arm"]: row for row in summary["tables"][0]["rows"]}
    assert rows["adafactor-own"]["lr"] is None and rows["adafactor-own"]["lr_label"] == "own"
    assert rows["adamw"]["lr_label"] == "0.001"
    assert "| own |" in (study_dir / "report" / "report.md").read_text()
    assert (study_dir / "report" / "report.html").is_file()
    status = run("status", study_dir)
    assert status.exit_code == 0 and "own" in status.output
