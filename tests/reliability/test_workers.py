"""Workers die with their coordinator, and a reclaimed trial waits for every process of its previous attempt."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adamlab.studies import executors
from adamlab.training.checkpoint import latest_checkpoint

from ..studies.tiny import TINY_SPEC, cli_process, write_spec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


def test_killing_the_coordinator_kills_its_workers_at_once(tmp_path):
    spec = write_spec(tmp_path, TINY_SPEC.replace("steps: 3", "steps: 200"))
    study = tmp_path / "study"
    with (tmp_path / "sweep.log").open("w") as log:
        coordinator = cli_process("sweep", spec, "--out", study, "--no-progress", "--workers", "2", stdout=log,
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        folders, workers = [], []
        # Both workers alive and one of them training: waiting for both to checkpoint could let the first finish
        # while the second, started seconds later, is still loading.
        while len(workers) < 2 or not any(latest_checkpoint(f) is not None for f in folders):
            assert coordinator.poll() is None, (tmp_path / "sweep.log").read_text()
            assert time.monotonic() < deadline, "the workers never checkpointed"
            time.sleep(0.05)
            folders = sorted((study / "trials").glob("[!.]*")) if (study / "trials").is_dir() else []
            workers = [pid for pid in children(coordinator.pid) if alive(pid)
                       and b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
    killed = time.monotonic()
    while any(alive(pid) for pid in workers):
        assert time.monotonic() - killed < 0.5, "a worker outlived its coordinator"
        time.sleep(0.01)


LOCK_HOLDER = """
import fcntl, sys, time
with open(sys.argv[1], "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    folder.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder.parent / f".{folder.name}.lock"),
                               str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_reclaimed_trial_waits_for_the_previous_attempt_to_end(tmp_path):
    folder = tmp_path / "trials" / "abc"
    holder = hold_lock(folder, 0.8)  # an orphan still writing the folder
    started = time.monotonic()
    with executors._trial_lock(folder):
        waited = time.monotonic() - started
    assert waited > 0.5  # the lock came free only when the holder closed it, at its end
    assert holder.wait(timeout=5) == 0


def test_a_trial_whose_folder_stays_in_use_fails_with_one_line(tmp_path, monkeypatch):
    from adamlab.models import LoraSettings
    from adamlab.training import TrainConfig

    monkeypatch.setattr(executors, "LOCK_WAIT_SECONDS", 0.3)
    config = TrainConfig(model="tiny-llama", task="ag_news", out=str(tmp_path / "trials" / "abc"), steps=1,
                         batch_size=2, train_limit=4, eval_limit=2, max_seq_len=64, lora=LoraSettings(r=2, alpha=4))
    holder = hold_lock(config.out_dir, 5)
    try:
        outcome = executors.run_trial(config)
    finally:
        holder.kill()
        holder.wait()
    assert outcome.status == "failed" and "still being written by another process" in outcome.error
    assert "\n" not in outcome.error and not config.out_dir.exists()
