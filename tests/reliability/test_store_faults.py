"""The results store: damaged files give one line naming them, status and report never write, and a sweep whose
trials all failed says so and how to retry."""

import os

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.studies import Owner, Store, TrialOutcome, expand_trials, parse_spec
from adamlab.studies.store import STORE_FILE

from ..studies.tiny import TINY_SPEC, write_spec
from .conftest import read_only

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def finished_study(folder, status="done"):
    spec = parse_spec(TINY_SPEC, "tiny.yaml")
    store = Store.open(folder, create=True)
    store.register(spec, expand_trials(spec, folder))
    owner = Owner.current()
    while (trial := store.claim(owner)) is not None:
        evaluations = [{"step": 3, "accuracy": 0.5, "n_total": 8, "n_invalid": 0}] if status == "done" else []
        store.finish(trial.key, owner, TrialOutcome(status, 3 * (status == "done"), 1.0,
                                                    None if status == "done" else "PermissionError: read-only",
                                                    [{"step": 1, "loss": 1.0, "lr": 0.01}] if status == "done" else [],
                                                    evaluations))
    store.close()
    return folder


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zero bytes"])
@pytest.mark.parametrize("command", ["status", "report"])
def test_a_damaged_store_gives_one_line_naming_it(tmp_path, damage, command):
    study = finished_study(tmp_path / "study")
    store_file = study / STORE_FILE
    data = store_file.read_bytes()
    store_file.write_bytes({"garbage": b"not a database at all" * 100, "truncated": data[: len(data) // 3],
                            "zero bytes": b""}[damage])
    before = store_file.read_bytes()
    result = run(command, study)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert str(store_file) in result.stderr
    assert store_file.read_bytes() == before  # nothing written into it: not a schema, not a repair


def test_a_damaged_store_stops_a_sweep_with_one_line(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / STORE_FILE).write_bytes(b"\x00garbage" * 500)
    result = run("sweep", write_spec(tmp_path), "--out", study, "--no-progress")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{study / STORE_FILE} is not a readable results store" in result.stderr


def test_status_and_report_read_a_study_in_a_read_only_folder(tmp_path):
    study = finished_study(tmp_path / "study")
    assert run("report", study).exit_code == 0  # the report folder exists before the folder turns read-only
    listing = sorted(p.name for p in study.iterdir())
    with read_only(study):
        status = run("status", study)
        assert status.exit_code == 0, status.output
        assert "4 done" in status.output
        store = Store.open(study, read_only=True)
        assert store.counts()["done"] == 4
        store.close()
    assert sorted(p.name for p in study.iterdir()) == listing


def test_a_report_into_a_read_only_folder_is_one_line(tmp_path):
    study = finished_study(tmp_path / "study")
    with read_only(study):
        result = run("report", study)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"cannot write the report into {study / 'report'}" in result.stderr


def test_a_read_only_store_refuses_writes(tmp_path):
    study = finished_study(tmp_path / "study")
    store = Store.open(study, read_only=True)
    with pytest.raises(Exception, match="readonly"):
        store.requeue_failed()
    store.close()


def test_a_report_of_a_study_whose_trials_all_failed_is_written(tmp_path):
    study = finished_study(tmp_path / "study", status="failed")
    result = run("report", study)
    assert result.exit_code == 0, result.output
    assert "4 failed" in (study / "report" / "report.md").read_text()


def test_a_sweep_whose_trials_all_failed_exits_1_and_points_to_retry_failed(tmp_path):
    broken_model = tmp_path / "broken-model"  # passes validation (the folder exists), fails to load
    broken_model.mkdir()
    spec = write_spec(tmp_path, TINY_SPEC.replace("models: [tiny-llama]", f"models: [{broken_model}]")
                      .replace("seeds: [0, 1]", "seeds: [0]"))
    for attempt in range(2):  # the first sweep, then a re-run with nothing left to run
        result = run("sweep", spec, "--out", tmp_path / "study", "--no-progress")
        assert result.exit_code == 1, result.output
        assert "2 trials failed" in result.output and "--retry-failed" in result.output
        assert (tmp_path / "study" / "report" / "report.md").is_file()
    os.rmdir(broken_model)
