"""`adamlab results` and the DataFrame API: one row per trial from the store, in CSV, JSON and Parquet alike."""

import csv
import importlib.util
import io
import json
import shutil

import pytest
from typer.testing import CliRunner

from adamlab.cli import app
from adamlab.extras import MissingDependencyError
from adamlab.studies import Store, results_dataframe, trial_records, write_results

from .conftest import ACCURACY

runner = CliRunner()


def test_one_record_per_trial_with_identity_run_and_scores(study_dir):
    records = trial_records(study_dir)
    store = Store.open(study_dir)
    trials = store.trials()
    store.close()
    assert [r["key"] for r in records] == [t.key for t in trials]
    for record in records:
        expected = ACCURACY.get((record["arm"], record["seed"]))
        if record["arm"] == "adamdds" and expected is not None:
            expected += 0.1 * (record["lr"] > 4e-3)
        assert record["accuracy"] == expected  # None for the diverged trial: no evaluation
        assert record["status"] == ("done" if expected is not None else "diverged")
        assert record["final_loss"] == pytest.approx(2.0 - 3 * (1 + [t.position for t in trials
                                                                      if t.key == record["key"]][0] % 5) / 20
                                                     - record["seed"] / 4)
    assert list(records[0])[:8] == ["key", "arm", "model", "task", "optimizer", "schedule", "lr", "seed"]


def test_dataframe_matches_the_records(study_dir):
    frame = results_dataframe(study_dir)
    records = trial_records(study_dir)
    assert len(frame) == len(records) and list(frame.columns) == list(records[0])
    assert frame["accuracy"].max() == pytest.approx(0.9)
    assert frame.loc[frame["status"] == "diverged", "accuracy"].isna().all()


def test_cli_csv_and_json_to_stdout_agree_with_the_records(study_dir):
    records = trial_records(study_dir)
    as_json = runner.invoke(app, ["results", str(study_dir), "--format", "json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == records
    as_csv = runner.invoke(app, ["results", str(study_dir)])
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert as_csv.exit_code == 0 and [r["key"] for r in rows] == [r["key"] for r in records]
    assert [float(r["lr"]) for r in rows] == [r["lr"] for r in records]


def test_parquet_round_trips_through_pandas(study_dir, tmp_path):
    import pandas

    result = runner.invoke(app, ["results", str(study_dir), "--format", "parquet"])
    assert result.exit_code == 0 and (study_dir / "results.parquet").is_file()
    pandas.testing.assert_frame_equal(pandas.read_parquet(study_dir / "results.parquet"), results_dataframe(study_dir))
    written = write_results(study_dir, "json", tmp_path / "out" / "r.json")
    assert json.loads(written.read_text()) == trial_records(study_dir)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r.json"]  # no temporary file left


def test_a_study_name_finds_its_default_folder(study_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(study_dir, work / "studies" / "runs" / "tiny", ignore=shutil.ignore_patterns("work"))
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["results", "tiny", "--format", "json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == len(trial_records(study_dir))


@pytest.mark.parametrize("args,reason", [
    (["results", "no_such_study"], "no study folder at no_such_study"),
    (["results", "{study}", "--format", "xlsx"], "valid formats: csv, json, parquet"),
])
def test_bad_input_exits_2(study_dir, args, reason):
    result = runner.invoke(app, [a.format(study=study_dir) for a in args])
    assert result.exit_code == 2 and reason in result.stderr


def test_without_pandas_the_error_names_the_results_extra(study_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'adamlab\[results\]'"):
        results_dataframe(study_dir)
