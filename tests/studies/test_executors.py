"""Executors: several local workers and a local Ray cluster give the results of one trial after another; the
coordinator loop claims only for free workers, records crashed workers, and gives stopped trials back; a killed
coordinator's trials are resumed and a stopped Ray sweep checkpoints its trials; bad executor options exit 2, and
ray is needed only by the ray executor."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from adamlab.studies import Store, expand_trials, load_spec, sweep
from adamlab.studies.executors import ConcurrentExecutor, SweepListener, WorkerLost
from adamlab.studies.store import TrialOutcome
from adamlab.training.checkpoint import latest_checkpoint

from .test_store import registered
from .test_sweep import assert_each_trial_ran_once_and_completely, run
from .tiny import TINY_SPEC, cli_process, write_spec


def results(study_dir) -> dict[str, tuple[list[float], dict]]:
    """Per trial key: its step losses and its final evaluation, after checking each trial ran once."""
    store, trials = assert_each_trial_ran_once_and_completely(study_dir, steps=3)
    assert {t.attempts for t in trials} == {1}
    finals = store.final_evaluations()
    return {t.key: ([row["loss"] for row in store.step_metrics(t.key)], finals[t.key]) for t in trials}


@pytest.fixture(scope="module")
def one_after_another(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sequential")
    sweep(write_spec(folder), folder / "study")
    return results(folder / "study")


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on this machine's CPUs, two trials at a time; sweeps in this process use it."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report, in the workers either
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()


def test_ray_tasks_give_the_results_of_the_local_executor(one_after_another, ray_cluster, tmp_path):
    result = sweep(write_spec(tmp_path), tmp_path / "study", executor="ray")
    assert result.completed and ray_cluster.is_initialized()  # a session it did not start is left running
    assert results(tmp_path / "study") == one_after_another


def test_local_worker_processes_give_the_results_of_one_after_another(one_after_another, tmp_path):
    result = sweep(write_spec(tmp_path), tmp_path / "study", workers=2)
    assert result.completed
    assert results(tmp_path / "study") == one_after_another


# ---------------------------------------------------------------------------------------- the coordinator loop


@dataclass(eq=False)
class FakeTrial:
    key: str


class ScriptedWorkers(ConcurrentExecutor):
    """Two workers that run nothing: trials end in start order, the first one's worker dies, the others are done;
    ``interrupt_after`` waits end in Ctrl-C, as if the user pressed it."""

    name = "scripted"

    def __init__(self, store: Store, interrupt_after: int | None = None):
        self.store, self.interrupt_after = store, interrupt_after
        self.started: list[FakeTrial] = []
        self.stopped: list[str] = []
        self.running_at_start: list[int] = []

    def open(self) -> int:
        return 2

    def start(self, config):
        self.running_at_start.append(self.store.counts()["running"])
        self.started.append(FakeTrial(config.out_dir.name))
        return self.started[-1]

    def wait(self, handles):
        if self.interrupt_after is not None and not self.stopped:
            if self.interrupt_after == 0:
                raise KeyboardInterrupt
            self.interrupt_after -= 1
        return handles[:1]

    def result(self, handle):
        if handle is self.started[0]:
            raise WorkerLost("the worker process ended with exit code -9")
        if handle.key in self.stopped:
            return TrialOutcome("interrupted")
        return TrialOutcome("done", 3, 1.0, None, [{"step": s, "loss": 1.0} for s in (1, 2, 3)],
                            [{"step": 3, "accuracy": 0.5, "seconds": 0.1}])

    def stop(self, handles, force=False):
        self.stopped += [handle.key for handle in handles]


def test_the_coordinator_claims_for_free_workers_only_and_records_a_dead_worker_as_failed(tmp_path):
    store, trials = registered(tmp_path)
    (tmp_path / "trials" / trials[0].key).mkdir(parents=True)  # the dead worker had logged one step
    (tmp_path / "trials" / trials[0].key / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    workers = ScriptedWorkers(store)
    assert workers.run(store, SweepListener())
    assert [t.key for t in workers.started] == [t.key for t in trials]
    assert workers.running_at_start == [1, 2, 2, 2]  # claimed, started; never more claimed than workers
    rows = store.trials()
    assert [t.status for t in rows] == ["failed", "done", "done", "done"] and not workers.stopped
    assert rows[0].error == "WorkerLost: the worker process ended with exit code -9" and rows[0].steps_completed == 1
    assert [row["loss"] for row in store.step_metrics(trials[0].key)] == [2.0]


def test_ctrl_c_in_the_coordinator_stops_the_running_trials_and_gives_them_back(tmp_path):
    store, trials = registered(tmp_path)
    workers = ScriptedWorkers(store, interrupt_after=1)
    assert not workers.run(store, SweepListener())
    assert workers.stopped == [trials[1].key, trials[2].key]
    assert [(t.status, t.owner) for t in store.trials()] == [
        ("failed", None), ("queued", None), ("queued", None), ("queued", None)]


# ---------------------------------------------------------------------------------------- stopped sweeps, end to end


def signal_when_two_trials_checkpointed(tmp_path, signum: int, steps: int, *options: str, both: bool = True):
    """Start a CLI sweep of ``steps``-step trials with ``options``, send ``signum`` once the first two trials (running at
    once) have checkpointed step 3 or later, and return the spec, the study folder, the two trials and the steps of
    the checkpoints seen. With ``both=False`` the signal goes once one of them has (the other is claimed, and may not have
    started): worker processes can start seconds apart, long enough for a short trial to finish before the other one
    checkpoints."""
    spec = write_spec(tmp_path, TINY_SPEC.replace("steps: 3", f"steps: {steps}"))
    study_dir = tmp_path / "study"
    first_two = expand_trials(load_spec(spec), study_dir)[:2]
    with (tmp_path / "sweep.log").open("w") as log:
        coordinator = cli_process("sweep", spec, "--out", study_dir, "--no-progress", *options, stdout=log,
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        seen = [0, 0]
        while (min(seen) if both else max(seen)) < 3:
            assert coordinator.poll() is None, (tmp_path / "sweep.log").read_text()
            assert time.monotonic() < deadline, "no checkpoints appeared"
            time.sleep(0.005)
            checkpoints = [latest_checkpoint(study_dir / "trials" / trial.key) for trial in first_two]
            seen = [int(c.name.split("-")[1]) if c is not None else 0 for c in checkpoints]
        coordinator.send_signal(signum)
        coordinator.wait(timeout=120)
    for trial in first_two:
        result = study_dir / "trials" / trial.key / "result.json"
        assert not result.exists() or json.loads(result.read_text())["status"] == "interrupted", "a trial finished"
    return spec, study_dir, first_two, seen, coordinator.returncode


def test_a_killed_coordinator_of_local_workers_is_resumed_from_the_checkpoints(tmp_path):
    spec, study_dir, first_two, seen, _ = signal_when_two_trials_checkpointed(tmp_path, signal.SIGKILL, 40, "--workers", "2",
                                                                              both=False)
    before = [(study_dir / "trials" / t.key / "metrics.jsonl").read_text().splitlines()[:step] if step else []
              for t, step in zip(first_two, seen)]
    assert max(seen) >= 3
    assert Store.open(study_dir).counts()["running"] == 2

    result = run("sweep", spec, "--out", study_dir, "--no-progress", "--workers", "2")
    assert result.exit_code == 0, result.output
    store, trials = assert_each_trial_ran_once_and_completely(study_dir, steps=40)
    resumed = {t.key for t in first_two}
    assert {t.key: t.attempts for t in trials} == {t.key: 2 if t.key in resumed else 1 for t in trials}
    for trial, kept in zip(first_two, before):  # the steps before the checkpoints were kept, not run again
        assert (study_dir / "trials" / trial.key / "metrics.jsonl").read_text().splitlines()[:len(kept)] == kept


def test_ctrl_c_in_a_ray_sweep_checkpoints_its_trials_and_gives_them_back(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    spec, study_dir, first_two, seen, returncode = signal_when_two_trials_checkpointed(
        tmp_path, signal.SIGINT, 1000, "--executor", "ray")  # a few seconds to react: they must not end first
    assert returncode == 130 and "run the same command again to continue" in (tmp_path / "sweep.log").read_text()
    trials = Store.open(study_dir).trials()
    assert [(t.status, t.owner) for t in trials[:2]] == [("queued", None), ("queued", None)]
    for trial, step in zip(first_two, seen):  # stopped by train() at the end of a step, not killed
        folder = study_dir / "trials" / trial.key
        assert json.loads((folder / "result.json").read_text())["status"] == "interrupted"
        assert int(latest_checkpoint(folder).name.split("-")[1]) >= step


# ---------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(("options", "message"), [
    (("--address", "ray://head:10001"), "error: an address names a Ray cluster: it needs the ray executor"),
    (("--workers", "0"), "error: workers must be at least 1, got 0"),
    (("--executor", "slurm"), "error: unknown executor 'slurm'; available: local, ray"),
])
def test_bad_executor_options_exit_2_with_one_line(tmp_path, options, message):
    result = run("sweep", write_spec(tmp_path), "--out", tmp_path / "study", "--no-progress", *options)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(message)
    assert not (tmp_path / "study").exists()


def test_ray_is_optional_and_imported_only_for_the_ray_executor(tmp_path, monkeypatch):
    check = "import sys, adamlab.studies, adamlab.cli.study; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "adamlab.studies.ray_executor", raising=False)
    result = run("sweep", write_spec(tmp_path), "--out", tmp_path / "study", "--executor", "ray")
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: the ray executor needs the 'ray' package: pip install 'adamlab[ray]'\n"
