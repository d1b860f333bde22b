"""Sweeps end to end on tiny-llama: the CLI, a killed coordinator resumed, two coordinators on one study."""

import json
import re
import signal
import statistics
import subprocess
import time

import pytest
from typer.testing import CliRunner

import adamlab.cli.study  # noqa: F401  (registers the study commands)
from adamlab.cli.app import app
from adamlab.studies import Store, expand_trials, load_spec
from adamlab.training.checkpoint import checkpoints, latest_checkpoint, verify_checkpoint

from .tiny import TINY_SPEC, cli_process, write_spec

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_each_trial_ran_once_and_completely(study_dir, steps: int):
    store = Store.open(study_dir)
    trials = store.trials()
    assert {t.status for t in trials} == {"done"}
    for trial in trials:
        assert [row["step"] for row in store.step_metrics(trial.key)] == list(range(1, steps + 1))
        assert [r["step"] for r in read_jsonl(study_dir / "trials" / trial.key / "metrics.jsonl")] == \
            list(range(1, steps + 1))
        # The run's record and its per-example predictions are in the store, so reports need no run folder.
        assert store.run_record(trial.key)["steps_completed"] == steps
        assert store.predictions(trial.key) == read_jsonl(study_dir / "trials" / trial.key / "predictions.jsonl")
    counts = store.db.execute("SELECT COUNT(*), COUNT(DISTINCT trial || ':' || step) FROM step_metrics").fetchone()
    assert counts[0] == counts[1] == steps * len(trials)
    assert store.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == len(trials)
    return store, trials


def test_sweep_status_report_and_validate_from_the_cli(tmp_path):
    spec = write_spec(tmp_path)
    study_dir = tmp_path / "study"
    result = run("sweep", spec, "--out", study_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "4 trials, 4 to run" in result.output and "trials: 4 done" in result.output
    assert "tiny-llama · ag_news" in result.output and f"report: {study_dir / 'report' / 'report.md'}" in result.output

    store, trials = assert_each_trial_ran_once_and_completely(study_dir, steps=3)
    assert {t.attempts for t in trials} == {1}
    summary = json.loads((study_dir / "report" / "summary.json").read_text())
    finals = store.final_evaluations()
    for row in summary["tables"][0]["rows"]:
        keys = [t["key"] for t in row["trials"]]
        assert row["mean"]["accuracy"] == statistics.fmean(finals[key]["accuracy"] for key in keys)
        assert row["std"]["weighted_f1"] == statistics.stdev(finals[key]["weighted_f1"] for key in keys)

    again = run("sweep", spec, "--out", study_dir, "--no-progress")
    assert again.exit_code == 0 and "4 trials, 0 to run" in again.output
    assert {t.attempts for t in Store.open(study_dir).trials()} == {1}

    status = run("status", study_dir)
    assert status.exit_code == 0 and "tiny in" in status.output and "4 done" in status.output
    assert all(t.key in status.output for t in trials)

    (study_dir / "report" / "report.md").unlink()
    report = run("report", study_dir)
    assert report.exit_code == 0 and (study_dir / "report" / "report.md").is_file()

    valid = run("validate", spec)
    assert valid.exit_code == 0 and "ok, 4 trials" in valid.output
    published = write_spec(tmp_path, TINY_SPEC.replace("lr: 1e-2", "lr: dds x0.5, x2")
                           + "dds:\n  alpha:\n    tiny-llama: {ag_news: 4e-3}\n", name="dds.yaml")
    valid = run("validate", published)
    assert valid.exit_code == 0 and "dds step size for tiny-llama on ag_news: α = 0.004 (published)" in valid.output


def test_bad_input_exits_2_with_one_line(tmp_path):
    bad = write_spec(tmp_path, TINY_SPEC.replace("optimizer: adamw", "optimizer: adamww"))
    for args in (("validate", bad), ("sweep", bad, "--out", tmp_path / "s"), ("status", tmp_path / "nothing"),
                 ("report", tmp_path / "nothing"), ("sweep", write_spec(tmp_path, name="good.yaml"), "--executor", "slurm")):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert run("validate", bad).stderr.startswith(f"error: {bad}:20: Unknown optimizer 'adamww'")
    assert not (tmp_path / "s").exists()


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    broken_model = tmp_path / "broken-model"  # passes validation (the folder exists), fails to load
    broken_model.mkdir()
    spec = write_spec(tmp_path, TINY_SPEC.replace("models: [tiny-llama]", f"models: [tiny-llama, {broken_model}]")
                      .replace("seeds: [0, 1]", "seeds: [0]"))
    result = run("sweep", spec, "--out", tmp_path / "study", "--no-progress")
    assert result.exit_code == 0, result.output
    trials = Store.open(tmp_path / "study").trials()
    assert [(t.model == "tiny-llama", t.status) for t in trials] == [
        (True, "done"), (True, "done"), (False, "failed"), (False, "failed")]
    assert all("holds no config.json" in t.error for t in trials if t.status == "failed")


def signal_mid_trial(tmp_path, signum: int, checkpoint_every: int):
    """Start a sweep of 40-step trials, send ``signum`` once the first trial has recorded step 3, and return the
    study folder, the first trial and the number of steps it had recorded."""
    spec = write_spec(tmp_path, TINY_SPEC.replace("steps: 3", "steps: 40")
                      .replace("checkpoint_every: 1", f"checkpoint_every: {checkpoint_every}"))
    study_dir = tmp_path / "study"
    first = expand_trials(load_spec(spec), study_dir)[0]
    metrics = study_dir / "trials" / first.key / "metrics.jsonl"
    with (tmp_path / "sweep.log").open("w") as log:
        sweep = cli_process("sweep", spec, "--out", study_dir, "--no-progress", stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        seen = 0
        while seen < 3:
            assert sweep.poll() is None, (tmp_path / "sweep.log").read_text()
            assert time.monotonic() < deadline, "the first trial recorded no steps"
            time.sleep(0.005)
            seen = metrics.read_text().count("\n") if metrics.exists() else 0  # complete lines only
        sweep.send_signal(signum)
        sweep.wait(timeout=120)
    result = study_dir / "trials" / first.key / "result.json"  # an interrupted run writes one too
    assert not result.exists() or json.loads(result.read_text())["status"] == "interrupted", "the trial finished"
    return spec, study_dir, first, seen, sweep.returncode


def test_ctrl_c_checkpoints_the_trial_and_puts_it_back_in_the_queue(tmp_path):
    # No periodic checkpoints (checkpoint_every 0): the one checkpoint there is, Ctrl-C wrote.
    spec, study_dir, first, seen, returncode = signal_mid_trial(tmp_path, signal.SIGINT, checkpoint_every=0)
    assert returncode == 130 and "run the same command again to continue" in (tmp_path / "sweep.log").read_text()
    trial = Store.open(study_dir).trials()[0]
    assert (trial.key, trial.status, trial.owner) == (first.key, "queued", None)
    # Nothing that ran is lost: the run stops at the end of the step it was in, and that step is the checkpoint.
    trial_dir = study_dir / "trials" / first.key
    [stopped] = checkpoints(trial_dir)
    stopped_at = int(stopped.name.split("-")[1])
    assert verify_checkpoint(stopped) is None and stopped_at >= seen
    assert stopped_at == read_jsonl(trial_dir / "metrics.jsonl")[-1]["step"]


def test_a_killed_coordinator_is_resumed_from_the_checkpoints(tmp_path):
    spec, study_dir, first, _, _ = signal_mid_trial(tmp_path, signal.SIGKILL, checkpoint_every=1)
    resume_from = int(latest_checkpoint(study_dir / "trials" / first.key).name.split("-")[1])
    before = (study_dir / "trials" / first.key / "metrics.jsonl").read_text().splitlines()[:resume_from]
    assert Store.open(study_dir).counts()["running"] == 1

    result = run("sweep", spec, "--out", study_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    store, trials = assert_each_trial_ran_once_and_completely(study_dir, steps=40)
    assert {t.key: t.attempts for t in trials} == {t.key: 2 if t.key == first.key else 1 for t in trials}
    after = (study_dir / "trials" / first.key / "metrics.jsonl").read_text().splitlines()
    assert after[:resume_from] == before  # resumed: the steps before the checkpoint were kept, not run again


def test_two_coordinators_share_a_study_without_running_a_trial_twice(tmp_path):
    spec = write_spec(tmp_path, TINY_SPEC.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    study_dir = tmp_path / "study"
    sweeps = [cli_process("sweep", spec, "--out", study_dir, "--no-progress", stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [sweep.communicate(timeout=300)[0] for sweep in sweeps]
    assert [sweep.returncode for sweep in sweeps] == [0, 0], outputs
    ran = [re.findall(r"^done .* ([0-9a-f]{12})  ", output, re.M) for output in outputs]
    store, trials = assert_each_trial_ran_once_and_completely(study_dir, steps=3)
    assert sorted(ran[0] + ran[1]) == sorted(t.key for t in trials)
    assert {t.attempts for t in trials} == {1}


@pytest.mark.parametrize("command", ["status", "report"])
def test_reading_commands_leave_a_running_sweep_alone(tmp_path, command):
    """Readers never need the write lock: WAL lets status and report read while a coordinator writes."""
    spec = write_spec(tmp_path)
    study_dir = tmp_path / "study"
    assert run("sweep", spec, "--out", study_dir, "--no-progress").exit_code == 0
    store = Store.open(study_dir)
    store.db.execute("BEGIN IMMEDIATE")  # a coordinator mid-transaction
    try:
        assert run(command, study_dir).exit_code == 0
    finally:
        store.db.execute("ROLLBACK")
