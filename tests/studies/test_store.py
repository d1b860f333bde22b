"""The results store: registering, atomic claims across processes, reclaiming abandoned trials, idempotent rows."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adamlab.studies import Owner, Store, TrialOutcome, expand_trials, parse_spec
from adamlab.studies.store import STEP_COLUMNS
from adamlab.training.records import StepRecord

from .tiny import TINY_SPEC

WORKER = Path(__file__).with_name("claim_worker.py")
OPEN_WORKER = Path(__file__).with_name("open_worker.py")


def wait_for(ready: list[Path]) -> None:
    """Until every worker process has touched its ready file (they import torch first: seconds)."""
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready):
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.01)


def registered(study_dir: Path, text: str = TINY_SPEC) -> tuple[Store, list]:
    spec = parse_spec(text, "study.yaml")
    trials = expand_trials(spec, study_dir)
    store = Store.open(study_dir, create=True)
    store.register(spec, trials)
    return store, trials


def outcome(steps: int, accuracy: float = 0.5, status: str = "done") -> TrialOutcome:
    return TrialOutcome(status, steps, 1.0, None if status != "failed" else "RuntimeError: boom",
                        [{"step": s, "loss": 1.0 / s, "lr": 0.01, "rss_bytes": 10} for s in range(1, steps + 1)],
                        [{"step": steps, "accuracy": accuracy, "n_total": 8, "seconds": 0.1}], {"python": "3"})


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def rows(store: Store, table: str) -> int:
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_registering_again_queues_nothing_new_and_another_study_is_refused(tmp_path):
    store, trials = registered(tmp_path)
    registered(tmp_path)[0].close()
    assert store.counts()["queued"] == len(trials) == 4
    assert store.study().name == "tiny" and store.study().budget == {
        "search_space": "one fixed learning rate per arm", "trials_per_arm": 3}
    with pytest.raises(ValueError, match="holds study 'tiny', not 'other'"):
        registered(tmp_path, TINY_SPEC.replace("name: tiny", "name: other"))


def test_a_spec_with_another_seed_adds_only_the_new_trials(tmp_path):
    store, trials = registered(tmp_path)
    owner = Owner.current()
    first = store.claim(owner)
    store.finish(first.key, owner, outcome(3))
    registered(tmp_path, TINY_SPEC.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))[0].close()
    assert store.counts() == {"queued": 5, "running": 0, "done": 1, "diverged": 0, "failed": 0}


def test_an_arm_that_changes_its_configuration_needs_a_new_name(tmp_path):
    registered(tmp_path)[0].close()
    changed = TINY_SPEC.replace("{weight_decay: 0.01}", "{weight_decay: 0.1}")
    with pytest.raises(ValueError, match="arm 'adamw-cosine' ran another configuration"):
        registered(tmp_path, changed)
    store, trials = registered(tmp_path, changed.replace("adamw-cosine", "adamw-wd0.1"))
    assert store.counts()["queued"] == 6  # the old configuration stays, and will be reported


def test_claims_follow_the_expansion_order_and_finishing_records_every_row(tmp_path):
    store, trials = registered(tmp_path)
    owner = Owner.current()
    claimed = store.claim(owner)
    assert claimed.key == trials[0].key and claimed.status == "running" and claimed.attempts == 1
    assert claimed.owner == str(owner) and claimed.config["optimizer"] == "adam"
    assert store.finish(claimed.key, owner, outcome(3, accuracy=0.75))
    assert store.claim(owner).key == trials[1].key
    done = {t.key: t for t in store.trials()}[claimed.key]
    assert (done.status, done.steps_completed, done.owner, done.wall_seconds) == ("done", 3, None, 1.0)
    assert [row["step"] for row in store.step_metrics(claimed.key)] == [1, 2, 3]
    assert store.step_metrics(claimed.key)[0]["memory"] == {"rss_bytes": 10}
    assert store.final_evaluations() == {claimed.key: {"accuracy": 0.75, "n_total": 8}}
    assert store.environments() == {claimed.key: {"python": "3"}}


def test_finishing_again_replaces_the_rows(tmp_path):
    store, trials = registered(tmp_path)
    owner = Owner.current()
    key = store.claim(owner).key
    store.finish(key, owner, outcome(2, status="failed"))
    assert store.counts()["failed"] == 1 and rows(store, "step_metrics") == 2
    assert store.requeue_failed() == 1
    assert store.claim(owner).key == key
    store.finish(key, owner, outcome(3))
    assert rows(store, "step_metrics") == 3 and rows(store, "evaluations") == 1 and rows(store, "environment") == 1
    assert {t.key: t.attempts for t in store.trials()}[key] == 2


def test_a_trial_whose_owner_died_is_claimed_again_and_the_dead_owner_cannot_finish_it(tmp_path):
    store, trials = registered(tmp_path)
    dead = Owner(socket.gethostname(), dead_pid(), "dead")
    key = store.claim(dead).key
    alive = Owner.current()
    again = store.claim(alive)
    assert (again.key, again.attempts, again.owner) == (key, 2, str(alive))
    assert not store.finish(key, dead, outcome(3))
    assert store.finish(key, alive, outcome(3))


def test_a_live_owner_keeps_its_trial_until_its_heartbeat_is_stale(tmp_path):
    store, trials = registered(tmp_path)
    live = Owner(socket.gethostname(), os.getpid(), "live")
    elsewhere = Owner("another-host", 1, "remote")
    first, second = store.claim(live).key, store.claim(elsewhere).key
    other = Owner.current()
    assert store.claim(other).key not in (first, second)  # fresh heartbeats: nothing reclaimed
    reclaimed = {store.claim(other, stale_after=0.0).key, store.claim(other, stale_after=0.0).key}
    assert {first, second} & reclaimed  # a stale heartbeat frees a trial, whoever holds it


def test_the_heartbeat_thread_keeps_a_trial_fresh(tmp_path):
    store, trials = registered(tmp_path)
    owner = Owner.current()
    key = store.claim(owner).key
    before = store.trials()[0].heartbeat
    with store.heartbeat(key, owner, every=0.02):
        time.sleep(0.2)
    assert store.trials()[0].heartbeat > before


def test_two_processes_claim_every_trial_exactly_once(tmp_path):
    many = TINY_SPEC.replace("seeds: [0, 1]", f"seeds: {list(range(40))}")
    store, trials = registered(tmp_path, many)
    start, ready = tmp_path / "go", [tmp_path / "ready-0", tmp_path / "ready-1"]
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), str(start), str(flag)],
                                stdout=subprocess.PIPE, text=True) for flag in ready]
    wait_for(ready)
    start.touch()
    ran = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert all(ran), "both coordinators should have run trials"
    assert sorted(ran[0] + ran[1]) == sorted(t.key for t in trials)  # none twice, none lost
    assert {t.status for t in store.trials()} == {"done"} and {t.attempts for t in store.trials()} == {1}
    assert rows(store, "step_metrics") == rows(store, "evaluations") == rows(store, "environment") == len(trials) == 80


def test_processes_opening_a_new_store_at_the_same_instant_all_succeed(tmp_path):
    """Two coordinators started together on a new study both open its store: the switch of the new file into WAL
    mode waits for the other process like any write (it used to fail at once with "database is locked")."""
    folders = [str(tmp_path / f"study-{i}") for i in range(10)]
    start, ready = tmp_path / "go", [tmp_path / f"ready-{i}" for i in range(4)]
    workers = [subprocess.Popen([sys.executable, str(OPEN_WORKER), str(start), str(flag), *folders],
                                stdout=subprocess.PIPE, text=True) for flag in ready]
    wait_for(ready)
    (tmp_path / "go.tmp").write_text(str(time.time() + 0.2))
    (tmp_path / "go.tmp").rename(start)  # whole, or not there yet
    outputs = [worker.communicate(timeout=120)[0].splitlines() for worker in workers]
    assert all(lines == ["ok"] * len(folders) for lines in outputs), outputs


def test_the_step_columns_follow_the_step_record_and_an_older_store_gains_new_ones(tmp_path):
    assert STEP_COLUMNS == StepRecord.measurements()
    old = sqlite3.connect(tmp_path / "results.sqlite")  # a store made before 'epoch' was a measurement
    old.execute("CREATE TABLE step_metrics (trial TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, lr REAL, "
                "grad_norm REAL, update_norm REAL, step_seconds REAL, tokens_per_second REAL, memory TEXT, "
                "PRIMARY KEY (trial, step))")
    old.close()
    store, _ = registered(tmp_path)
    owner = Owner.current()
    key = store.claim(owner).key
    record = StepRecord(1, 2.0, 0.01, 0.5, 0.1, 0.2, 100.0, 0.25, {"rss_bytes": 10})
    assert store.finish(key, owner, TrialOutcome("done", 1, 1.0, None, [record.to_dict()]))
    (row,) = store.step_metrics(key)
    assert StepRecord.from_dict({**{k: v for k, v in row.items() if k not in ("trial", "memory")},
                                 **row["memory"]}) == record
