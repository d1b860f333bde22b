"""`adamlab lr` as a user runs it."""

import json

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.stepsize import StepsizeEstimate

runner = CliRunner()
TINY = ["--model", "tiny-llama", "--task", "ag_news", "--lora-r", "4", "--train-limit", "16", "--max-seq-len", "64",
        "--samples", "8", "--batch-size", "4", "--max-iter", "10"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_estimate_is_shown_and_written(tmp_path):
    result = run("lr", *TINY, "--horizon", "3125", "--json", tmp_path / "lr.json", "--per-group")
    assert result.exit_code == 0, result.output
    for shown in ("alpha", "K (max of per-batch spectral norms)", "95% interval", "sigma", "lambda", "3125 (fixed)",
                  "lora_B"):
        assert shown in result.output, shown
    estimate = StepsizeEstimate.load(tmp_path / "lr.json")
    assert estimate.model_id == "tiny-llama" and estimate.adapter_config["r"] == 4
    assert (estimate.T, estimate.n_examples_used, estimate.batch_size) == (3125, 8, 4)
    assert f"{estimate.alpha:.4e}" in result.output


def test_the_same_seed_gives_the_training_runs_w0_and_the_same_alpha(tmp_path):
    for name in ("a", "b"):
        assert run("lr", *TINY, "--horizon", "steps", "--steps", "100", "--no-progress", "--json",
                   tmp_path / f"{name}.json").exit_code == 0
    first, second = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b"))
    assert first["estimate"]["alpha"] == second["estimate"]["alpha"]
    assert first["estimate"]["horizon_mode"] == "steps" and first["lr"] == first["estimate"]["alpha"]
    assert {"method", "optimizer", "lr", "horizon", "cost_seconds", "diagnostics"} <= set(first)


def test_the_authors_preset(tmp_path):
    result = run("lr", "--model", "tiny-llama", "--task", "ag_news", "--lora-r", "4", "--train-limit", "3",
                 "--max-seq-len", "64", "--preset", "authors_llm", "--no-progress", "--json", tmp_path / "lr.json")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "lr.json").read_text())
    estimate = record["estimate"]
    assert record["method"] == "dds"
    assert (estimate["T"], estimate["method"], estimate["batch_size"], estimate["preset"]) == (1, "power_h2", 1,
                                                                                               "authors_llm")


def test_the_range_test_runs_on_the_same_model_and_data(tmp_path):
    result = run("lr", *TINY, "--method", "range-test", "--range-steps", "12", "--min-lr", "1e-5", "--max-lr", "1",
                 "--json", tmp_path / "range.json")
    assert result.exit_code == 0, result.output
    assert "suggested lr" in result.output
    record = json.loads((tmp_path / "range.json").read_text())
    assert record["method"] == "range-test" and record["lr"] == record["diagnostics"]["suggested_lr"]
    assert len(record["diagnostics"]["lrs"]) == 12


def test_the_suggestion_comes_from_the_same_resolver(tmp_path):
    result = run("lr", *TINY, "--method", "suggest", "--optimizer", "adamw", "--no-progress",
                 "--json", tmp_path / "suggest.json")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "suggest.json").read_text())
    assert record["optimizer"] == "adamw" and f"{record['lr']:.4e}" in result.output
    assert "share of eta_max" in result.output and "(fine-tune)" in result.output


@pytest.mark.parametrize("change,reason", [
    ({"--horizon": "sometimes"}, "--horizon must be"),
    ({"--horizon": "steps"}, "needs --steps"),
    ({"--preset": "authors"}, "Did you mean 'authors_llm'"),
    ({"--method": "arnoldi"}, "unknown --method"),
    ({"--samples": "0"}, "n_examples must be an int >= 1"),
    ({"--aggregate": "quantile:2"}, "aggregate"),
    ({"--hvp": "reverse"}, "HVP engine"),
    ({"--model": "not-a-model"}, "not a built-in name"),
    ({"--task": "agnews"}, "Did you mean 'ag_news'"),
    ({"--lora": "qlora"}, "--lora must be"),
    ({"--json": "no/such/folder/lr.json"}, "does not exist"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, change, reason):
    options = dict(zip(TINY[::2], TINY[1::2])) | {"--horizon": "one", "--json": str(tmp_path / "lr.json")} | change
    result = run("lr", *[item for pair in options.items() for item in pair], "--no-progress")
    assert result.exit_code == 2, result.output
    assert reason in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "lr.json").exists()
