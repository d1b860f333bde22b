"""The learning-rate methods as sources of a run's learning rate: through the resolver, in `adamlab lr` and in
`adamlab train`, with the warning for an lr above where training was measured to become unstable."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.models import LoraSettings
from adamlab.stepsize.suggest import SUGGEST_FRACTIONS, SUGGESTION_METHODS, LRSuggestion
from adamlab.studies import expand_trials, parse_spec
from adamlab.training import TrainConfig
from adamlab.training.lr_source import LR_METHODS, LRSource, instability_point, resolve_lr, stability_warning

from ..studies.tiny import TINY_SPEC

PLANNED = dict(model="tiny-llama", task="ag_news", train_limit=32, max_seq_len=64, batch_size=4, steps=20,
               lora=LoraSettings(r=4, alpha=8))
FAST = {"warmup_steps": 3, "max_iter": 5}  # MethodSettings: a cheap estimate is enough to test the plumbing


def test_every_suggestion_method_is_a_learning_rate_source():
    assert set(SUGGESTION_METHODS) <= set(LR_METHODS)


@pytest.mark.parametrize("method", ["suggest", "aeos", "dds-warm"])
def test_a_suggestion_method_resolves_caches_and_is_read_back(method, tmp_path):
    config = TrainConfig(**PLANNED, optimizer="adamw", out=str(tmp_path / "run"))
    lr, resolution = resolve_lr(config, LRSource(method, multiplier=0.5), options=FAST)
    record = LRSuggestion.from_dict(resolution.record)
    assert (record.method, record.optimizer, record.horizon, record.batch_size) == (method, "adamw", 20, 4)
    assert lr == pytest.approx(0.5 * record.lr) and lr > 0 and not resolution.cached
    assert resolution.path == str(tmp_path / "run" / f"stepsize-{method}.json")
    again, reread = resolve_lr(config, LRSource(method), options=FAST)
    assert again == pytest.approx(record.lr) and reread.cached and reread.cost_seconds == 0


SUGGEST_FRACTION = SUGGEST_FRACTIONS["fine-tune"]  # PLANNED fine-tunes (LoRA on tiny-llama)


def test_suggest_is_its_fraction_of_the_edge_of_stability():
    lr, resolution = resolve_lr(TrainConfig(**PLANNED, optimizer="adam"), LRSource("suggest"), options=FAST)
    diagnostics = resolution.record["diagnostics"]
    assert diagnostics["start"] == "fine-tune" and diagnostics["fraction"] == SUGGEST_FRACTION
    assert lr == pytest.approx(SUGGEST_FRACTION * diagnostics["eta_max"])


def test_a_model_pre_trained_from_scratch_gets_the_from_scratch_fraction():
    config = TrainConfig(model="llama-tiny", task="c4", lora=None, optimizer="adam", batch_size=4, steps=20,
                         max_seq_len=32, train_limit=16)
    lr, resolution = resolve_lr(config, LRSource("suggest"), options=FAST)
    diagnostics = resolution.record["diagnostics"]
    assert diagnostics["start"] == "from-scratch" and diagnostics["fraction"] == SUGGEST_FRACTIONS["from-scratch"]
    assert lr == pytest.approx(SUGGEST_FRACTIONS["from-scratch"] * diagnostics["eta_max"])


@pytest.mark.parametrize("method,expected_key", [("dds-one", "alpha"), ("range-test-min10", "suggested_lr")])
def test_the_dds_and_range_test_variants_resolve(method, expected_key):
    options = {"samples": 8} if method == "dds-one" else {"num_steps": 10}
    lr, resolution = resolve_lr(TrainConfig(**PLANNED, optimizer="adam"), LRSource(method), options=options)
    assert lr == resolution.record[expected_key] > 0
    if method == "dds-one":
        assert resolution.record["T"] == 1
    else:
        assert resolution.record["rule"] == "min_div_10"


def test_the_warning_fires_above_the_edge_of_stability_and_not_below():
    config = TrainConfig(**PLANNED, optimizer="adam")
    _, base = resolve_lr(config, LRSource("suggest"), options=FAST)
    eta_max = base.record["diagnostics"]["eta_max"]
    below = resolve_lr(config, LRSource("suggest", multiplier=0.5 / SUGGEST_FRACTION), options=FAST)
    above = resolve_lr(config, LRSource("suggest", multiplier=2 / SUGGEST_FRACTION), options=FAST)
    assert stability_warning(config, *below) is None
    warning = stability_warning(config, *above)
    assert warning is not None and "\n" not in warning and f"{eta_max:.3g}" in warning and "2.0x" in warning


def test_the_warning_fires_above_the_range_tests_divergence_point():
    record = {"method": "range_test", "stopped_early": True, "lrs": [1e-3, 1e-2, 1e-1]}
    assert instability_point(record) == (1e-1, "the range test")
    assert instability_point({**record, "stopped_early": False}) == (None, "")


def test_a_fixed_learning_rate_is_never_second_guessed():
    config = TrainConfig(**PLANNED, optimizer="adam", lr=10.0)
    assert stability_warning(config, *resolve_lr(config)) is None


def test_adam_dds_above_its_own_bound_warns_and_records_it(tmp_path):
    """The issue's case: tiny-llama, a short horizon, and AdamDDS's alpha far above the stable range."""
    result = CliRunner().invoke(app, [
        "train", "--model", "tiny-llama", "--task", "ag_news", "--optimizer", "adam_dds", "--opt", "samples=8",
        "--steps", "3", "--batch-size", "4", "--train-limit", "16", "--eval-limit", "4", "--max-seq-len", "64",
        "--lora-r", "4", "--out", str(tmp_path / "run"), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    lr_record = json.loads((tmp_path / "run" / "result.json").read_text())["lr"]
    assert lr_record["method"] == "dds" and lr_record["warning"].startswith("warning: lr ")
    assert "aeos measured adam_dds training to become unstable" in lr_record["warning"]
    assert (tmp_path / "run" / "stepsize-aeos.json").is_file()  # the bound is cached for a resumed run


def test_adamlab_lr_writes_one_record_layout(tmp_path):
    out = tmp_path / "lr.json"
    result = CliRunner().invoke(app, [
        "lr", "--model", "tiny-llama", "--task", "ag_news", "--method", "suggest", "--optimizer", "lion",
        "--horizon", "40", "--batch-size", "4", "--train-limit", "16", "--max-seq-len", "64", "--lora-r", "4",
        "--json", str(out), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert {"method", "optimizer", "lr", "horizon", "batch_size", "cost_seconds", "diagnostics"} <= set(record)
    assert (record["method"], record["optimizer"], record["horizon"], record["batch_size"]) == ("suggest", "lion", 40,
                                                                                               4)
    assert record["diagnostics"]["preconditioner"] == "sign"
    assert f"{record['lr']:.4e}" in result.output


def test_adamlab_lr_refuses_an_unknown_method_listing_the_valid_ones():
    result = CliRunner().invoke(app, ["lr", "--model", "tiny-llama", "--task", "ag_news", "--method", "magic"])
    assert result.exit_code == 2 and "suggest" in result.output and "aeos" in result.output


def test_a_study_flags_the_multiples_above_the_edge_of_stability(tmp_path):
    spec = parse_spec(TINY_SPEC.replace("lr: 1e-2", "lr: suggest x1, x20"), tmp_path / "tiny.yaml")
    trials = expand_trials(spec, tmp_path, estimates=tmp_path / "stepsize")
    flagged = {t.stepsize_estimate["multiplier"]: "lr_warning" in t.stepsize_estimate for t in trials}
    assert flagged == {1.0: False, 20.0: True}  # 20 x 0.1 x eta_max = 2 eta_max
    eta_max = trials[0].stepsize_estimate["diagnostics"]["eta_max"]
    assert trials[0].stepsize_estimate["unstable_above"] == eta_max
