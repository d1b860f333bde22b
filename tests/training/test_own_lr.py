"""An optimizer in a mode that computes its own step size (HF Adafactor's relative_step) trains with no lr."""

import json

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.training import TrainConfig

TINY = ["--model", "tiny-llama", "--task", "ag_news", "--steps", "3", "--batch-size", "4", "--train-limit", "16",
        "--eval-limit", "4", "--max-seq-len", "64", "--lora-r", "4", "--lora-alpha", "8", "--no-progress"]
LR_FREE = ["--optimizer", "adafactor_hf", "--opt", "relative_step=true", "--opt", "scale_parameter=true",
           "--opt", "warmup_init=true"]


def test_adafactor_relative_step_trains_with_no_lr(tmp_path):
    result = CliRunner().invoke(app, ["train", *TINY, *LR_FREE, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "done" and record["config"]["lr"] is None
    assert record["lr"]["method"] == "optimizer" and record["lr"]["lr"] is None
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # warmup_init: Adafactor's own step size grows 1e-6 x step (times the parameter scale); the scheduler reports it
    assert 0 < steps[1]["lr"] < steps[2]["lr"] < 1e-3


def test_an_lr_given_to_a_lr_free_mode_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["train", *TINY, *LR_FREE, "--lr", "1e-3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "computes its own step size" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("optimizer_args,own", [({"relative_step": True}, True), ({"relative_step": False}, False),
                                                ({}, False)])
def test_the_registry_decides_when_an_optimizer_computes_its_own_lr(optimizer_args, own):
    config = TrainConfig(model="tiny-llama", task="ag_news", optimizer="adafactor_hf", optimizer_args=optimizer_args)
    assert config.computes_own_lr is own
    assert TrainConfig(model="tiny-llama", task="ag_news", optimizer="adamw").computes_own_lr is False


def test_a_lr_free_mode_refuses_a_schedule_and_other_optimizers_need_an_lr():
    with pytest.raises(ValueError, match="constant schedule"):
        TrainConfig(model="tiny-llama", task="ag_news", optimizer="adafactor_hf", lr=None, schedule="cosine",
                    optimizer_args={"relative_step": True}).validate()
    with pytest.raises(ValueError, match="needs a learning rate"):
        TrainConfig(model="tiny-llama", task="ag_news", optimizer="adamw", lr=None).validate()
