"""The workload study specs (pre-training, GLUE) expand into valid trials, with the settings they state."""

from importlib import resources

import pytest

from adamlab.studies import expand_trials, load_spec

SPECS = resources.files("adamlab.studies").joinpath("specs")


@pytest.mark.parametrize("name", ["pretrain_cpu", "pretrain_c4_llama", "adam_mini_gpt2", "glue_ldadam",
                                  "glue_minilm_cpu"])
def test_spec_expands_to_valid_trials(tmp_path, name):
    spec = load_spec(SPECS.joinpath(f"{name}.yaml"))
    trials = expand_trials(spec, tmp_path, estimates=tmp_path / "estimates", run_estimates=False)
    assert trials and len({trial.key for trial in trials}) == len(trials)
    pretraining = name.startswith(("pretrain", "adam_mini"))
    assert all((trial.config.lora is None) == (pretraining or name == "glue_ldadam") for trial in trials)


def test_cpu_pretraining_compares_the_five_optimizers(tmp_path):
    spec = load_spec(SPECS.joinpath("pretrain_cpu.yaml"))
    trials = expand_trials(spec, tmp_path, estimates=tmp_path / "estimates", run_estimates=False)
    assert sorted(trial.config.optimizer for trial in trials) == ["adabelief", "adam_mini", "adamw", "ldadam", "lion"]
    assert {trial.config.model for trial in trials} == {"llama-tiny"}
    assert {trial.config.schedule for trial in trials} == {"cosine"}
