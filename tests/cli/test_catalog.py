"""`adamlab optimizers` reads whole at 80 columns and when piped; status lines and quiet libraries."""

import logging
import re

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.console import QUIET_LOGGERS, phase, quiet_libraries
from adamlab.optim import registry

runner = CliRunner()


def test_piped_optimizers_are_one_whole_tab_separated_line_each():
    result = runner.invoke(app, ["optimizers"])  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split("\t") == ["name", "source", "installed", "aliases", "algorithm"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert set(rows) == {*registry.REGISTRY, "lookahead", "switch"}
    for name, spec in registry.REGISTRY.items():
        assert rows[name][4] == spec.summary and rows[name][3] == ", ".join(spec.aliases)
    assert "…" not in result.output


def test_optimizers_table_fits_80_columns_without_cutting_names(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as on a terminal
    result = runner.invoke(app, ["optimizers"])
    assert result.exit_code == 0
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    assert "\t" not in output and max(len(line.rstrip()) for line in output.splitlines()) <= 80
    assert "…" not in output
    words = output.split()
    assert all(name in words for name in registry.REGISTRY)
    assert all(f"= {alias}" in output for spec in registry.REGISTRY.values() for alias in spec.aliases)


def test_phase_prints_one_line_to_stderr_when_piped(capsys):
    with phase("evaluating on 200 examples"):
        print("inside")
    captured = capsys.readouterr()
    assert captured.err == "evaluating on 200 examples ...\n" and captured.out == "inside\n"
    with phase("silent", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_quiet_libraries_turns_off_transformers_bars_and_kernel_warnings():
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.NOTSET)
    quiet_libraries()
    assert not hf_logging.is_progress_bar_enabled()
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.ERROR for name in QUIET_LOGGERS)
    hf_logging.enable_progress_bar()


@pytest.mark.parametrize("args", [["--version"], ["studies"]])
def test_commands_print_nothing_to_stderr(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and result.stderr == ""
