"""The one learning-rate resolver: the grammar, each source, caching and reuse, and the method table."""

import json

import pytest

from adamlab.models import LoraSettings
from adamlab.stepsize import StepsizeEstimate
from adamlab.training import TrainConfig, estimate_for_config, lr_source, setup
from adamlab.training.lr_source import (
    LR_METHODS,
    LRMethod,
    LRSource,
    register_lr_method,
    resolve_lr,
    source_of,
)

PLANNED = dict(model="tiny-llama", task="ag_news", train_limit=16, max_seq_len=64, batch_size=4, steps=5,
               lora=LoraSettings(r=4, alpha=8))


@pytest.mark.parametrize("text,expected", [
    (3e-4, [LRSource("fixed", 3e-4)]),
    ("1e-3", [LRSource("fixed", 1e-3)]),
    ("dds", [LRSource("dds")]),
    ("dds x0.5", [LRSource("dds", multiplier=0.5)]),
    ("suggest x0.5, x1", [LRSource("suggest", multiplier=0.5), LRSource("suggest")]),
    ("range-test", [LRSource("range-test")]),
    ([1e-3, 3e-3], [LRSource("fixed", 1e-3), LRSource("fixed", 3e-3)]),
])
def test_the_grammar(text, expected):
    assert LRSource.parse_list(text) == expected
    assert [LRSource.parse(str(source)) for source in expected] == expected  # str() reads back


@pytest.mark.parametrize("text,reason", [
    ("fast", "unknown learning-rate method 'fast'. Valid: a number, dds"),
    ("sugest x2", "Did you mean 'suggest'"),
    ("dds 0.5", "dds multiples are written x0.5"),
    ("dds x0", "a dds multiple must be a finite number > 0"),
    (-1.0, "a learning rate must be a finite number >= 0"),
])
def test_bad_sources_say_what_is_valid(text, reason):
    with pytest.raises(ValueError, match=reason):
        LRSource.parse_list(text)


def test_a_fixed_learning_rate_needs_no_model(monkeypatch):
    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("a fixed lr loaded a model"))
    lr, resolution = resolve_lr(TrainConfig(**PLANNED, lr=3e-4))
    assert lr == 3e-4 and (resolution.method, resolution.estimate, resolution.cached) == ("fixed", None, False)


def test_adam_dds_declares_a_dds_source():
    config = TrainConfig(**PLANNED, optimizer="adam_dds", optimizer_args={"multiplier": 0.5, "samples": 8})
    assert source_of(config) == LRSource("dds", multiplier=0.5)
    assert config.split_optimizer_args() == ({}, {"multiplier": 0.5, "samples": 8})
    assert source_of(TrainConfig(**PLANNED, optimizer="adamw", lr=1e-3)) == LRSource("fixed", 1e-3)


@pytest.mark.parametrize("method,lr_key", [("dds", "alpha"), ("range-test", "suggested_lr"),
                                           ("suggest", "suggested_lr")])
def test_each_method_estimates_once_and_is_read_back(tmp_path, monkeypatch, method, lr_key):
    config = TrainConfig(**PLANNED, out=str(tmp_path / "run"), optimizer="adamw",
                         optimizer_args={"samples": 8} if method == "dds" else {})
    options = {"max_iter": 5, "bootstrap": 0} if method == "dds" else {"num_steps": 8}
    lr, first = resolve_lr(config, LRSource(method, multiplier=2.0), options=options)
    cache = tmp_path / "run" / ("stepsize.json" if method == "dds" else f"stepsize-{method}.json")
    record = json.loads(cache.read_text())
    assert first.path == str(cache) and not first.cached and first.cost_seconds > 0
    assert lr == pytest.approx(2 * record[lr_key]) and first.estimate == record[lr_key]

    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("a cached estimate loaded a model"))
    again, second = resolve_lr(config, LRSource(method, multiplier=0.5))
    assert again == pytest.approx(0.5 * record[lr_key]) and second.cached and second.cost_seconds == 0


def test_the_dds_method_is_the_estimate_for_the_planned_run():
    config = TrainConfig(**PLANNED, optimizer_args={"samples": 8})
    _, resolution = resolve_lr(config, LRSource("dds"), options={"max_iter": 5, "bootstrap": 0})
    estimate = estimate_for_config(config, max_iter=5, bootstrap=0)
    assert isinstance(estimate, StepsizeEstimate) and resolution.estimate == estimate.alpha
    assert (estimate.T, estimate.n_examples_used, estimate.model_id) == (5, 8, "tiny-llama")


def test_the_estimate_shows_its_progress(monkeypatch, tmp_path):
    updates = []
    monkeypatch.setattr(lr_source.Progress, "update", lambda self, task, **fields: updates.append(fields))
    method = LRMethod("counted", "three steps", lambda config, inputs, progress, **options:
                      [progress(done, 3) for done in (1, 2, 3)] and {"lr": 0.1}, lambda record: record["lr"])
    monkeypatch.setitem(LR_METHODS, "counted", method)
    resolve_lr(TrainConfig(**PLANNED), LRSource("counted"), cache=tmp_path / "counted.json", inputs="prepared",
               show_progress=True)
    assert updates == [{"completed": done, "total": 3} for done in (1, 2, 3)]


def test_a_given_estimate_file_is_used_and_a_missing_one_is_refused(tmp_path):
    (tmp_path / "lr.json").write_text(json.dumps({"alpha": 0.02}))
    config = TrainConfig(**PLANNED, optimizer="adam_dds", optimizer_args={"estimate": str(tmp_path / "lr.json"),
                                                                          "multiplier": 0.5})
    lr, resolution = resolve_lr(config)
    assert lr == pytest.approx(0.01) and resolution.cached and resolution.source == "dds x0.5"
    config.optimizer_args["estimate"] = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        resolve_lr(config)


def test_a_registered_method_is_a_source_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("no model for this test"))
    monkeypatch.delitem(LR_METHODS, "half-of-steps", raising=False)
    seen = []
    method = LRMethod("half-of-steps", "a test method", lambda config, inputs, progress, **options:
                      seen.append(inputs) or {"lr": 1 / (2 * config.steps)}, lambda record: record["lr"])
    register_lr_method(method)
    try:
        assert LRSource.parse("half-of-steps x3") == LRSource("half-of-steps", multiplier=3.0)
        with pytest.raises(ValueError, match="already registered"):
            register_lr_method(method)
        lr, resolution = resolve_lr(TrainConfig(**PLANNED), LRSource("half-of-steps", multiplier=3.0),
                                    cache=tmp_path / "estimate.json", inputs="prepared by the caller")
        assert lr == pytest.approx(0.3) and seen == ["prepared by the caller"]
        assert json.loads((tmp_path / "estimate.json").read_text()) == {"lr": 0.1}
    finally:
        del LR_METHODS["half-of-steps"]
