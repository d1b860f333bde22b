"""recommend searches an optimizer that computes its own step size (adafactor_hf's relative_step) as one candidate
with no lr grid, records it with lr None and origin "optimizer's own", and can select and report it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adamlab.reports.verdict import write_verdict_report
from adamlab.studies.recommend import OWN_LR_ORIGIN, RESULT_FILE, candidates, recommend, verdict_line

from .recommend_helpers import tiny_settings


def test_an_lr_free_optimizer_is_one_candidate_on_its_own_schedule(tmp_path):
    settings = tiny_settings(tmp_path, lrs={}, optimizers=["adamw", "adafactor_hf"], schedules=["cosine", "linear"],
                             train_args={"batch_size": 8, "max_seq_len": 48, "lora": None, "warmup_steps": 2})
    found = candidates(settings)
    own = [c for c in found if c.optimizer == "adafactor_hf"]
    assert len(own) == 1 and len(found) == 1 + 2 * 4  # adamw: 2 schedules x 4 rates
    assert own[0].lr is None and own[0].lr_origin == OWN_LR_ORIGIN and own[0].schedule == "constant"
    assert own[0].optimizer_args == {"relative_step": True}
    config = settings.trial_config(own[0], 0, "")
    assert config.lr is None and config.computes_own_lr and config.warmup_steps == 0  # it schedules its own
    settings.validate()


def test_learning_rates_given_to_an_lr_free_optimizer_are_refused(tmp_path):
    settings = tiny_settings(tmp_path, optimizers=["adamw", "adafactor_hf"], lrs={"adafactor_hf": [1e-3]})
    with pytest.raises(ValueError, match="adafactor_hf computes its own step size"):
        settings.validate()


def test_an_lr_free_optimizer_is_selected_recorded_and_reported(tmp_path):
    # adamw at 1e-5 learns nothing (excluded at chance); adafactor_hf's own step size (a constant 1e-2 here) learns
    # the task under LoRA with a wide margin: dev accuracy 0.86-0.875 at 81-162 steps against a guard at ~0.55.
    # (Full fine-tuning of tiny-llama at that step size oscillates: 0.51-0.74 from 27 to 108 steps, and whether
    # 27 steps cleared the guard depended on the CPU's rounding.)
    settings = tiny_settings(tmp_path, optimizers=["adamw", "adafactor_hf"], lrs={"adamw": [1e-5]}, seeds=1,
                             steps=108, train_args={"batch_size": 8, "max_seq_len": 48, "eval_batch_size": 100})
    result = recommend(settings)
    assert result["optimizer"] == "adafactor_hf" and result["lr"] is None and result["lr_origin"] == OWN_LR_ORIGIN
    assert result["schedule"] == "constant" and result["hparams"] == {"relative_step": True}
    assert json.loads((Path(settings.out) / RESULT_FILE).read_text())["lr"] is None
    assert "--lr" not in result["use_it"]["adamlab"] and "lr=" not in result["use_it"]["python"]
    assert "AdafactorSchedule(optimizer)" in result["use_it"]["hf_trainer"]
    assert verdict_line(result).startswith("Use adafactor_hf (lr own, constant)")
    written = write_verdict_report(settings.out)
    assert verdict_line(result) in written.markdown.read_text() and written.html.is_file()
