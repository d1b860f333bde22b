"""Executors: where a study's trials run.

Whatever the executor, the coordinating process (the one running ``adamlab sweep``) claims trials, keeps their
heartbeats fresh and alone writes the store; an executor only decides where ``train()`` runs. ``local`` runs trials
in this process one after another, or, with several workers (by default one per visible GPU), each in a worker
process of its own. ``ray`` (``ray_executor``) sends each trial to a Ray cluster as a task. Workers run
``run_trial`` and send back its ``TrialOutcome``, plain data.

A trial is claimed only when a worker is free to start it, so a second coordinator on the same study takes the
rest. Ctrl-C asks every running trial to checkpoint and stop, and puts it back in the queue for the next sweep.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import multiprocessing
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import ClassVar

import torch

from ..training import TrainConfig, train
from ..training.loop import read_jsonl
from .store import Heartbeat, Owner, Store, TrialOutcome, TrialRow
from .trials import trial_folder


class SweepListener:
    """Progress callbacks of a sweep; this base ignores them."""

    def sweep_started(self, study_dir: Path, counts: dict[str, int]) -> None:
        pass

    def trial_started(self, trial: TrialRow) -> None:
        pass

    def trial_finished(self, trial: TrialRow, outcome: TrialOutcome) -> None:
        pass


class Executor(ABC):
    name: ClassVar[str]

    @abstractmethod
    def run(self, store: Store, listener: SweepListener, show_progress: bool = False) -> bool:
        """Run queued trials until none is left. False when the user stopped the sweep (Ctrl-C): the trials in
        progress are checkpointed and back in the queue, and the next sweep resumes them."""


class WorkerLost(Exception):
    """A worker ended without returning its trial's outcome: killed, out of memory, its node gone."""


@dataclass
class _InFlight:
    trial: TrialRow
    config: TrainConfig
    heartbeat: Heartbeat
    started: float


class ConcurrentExecutor(Executor):
    """Runs up to ``workers`` trials at once elsewhere (worker processes, a Ray cluster): this process claims a trial
    whenever a worker is free, keeps the heartbeat of each running trial fresh, and records each outcome."""

    @abstractmethod
    def open(self) -> int:
        """Get the workers ready; how many trials may run at once."""

    def close(self) -> None:
        pass

    @abstractmethod
    def start(self, config: TrainConfig) -> Hashable:
        """Start a trial on a free worker; a handle to wait on."""

    @abstractmethod
    def wait(self, handles: list[Hashable]) -> list[Hashable]:
        """Block until at least one of the trials has ended; those that have."""

    @abstractmethod
    def result(self, handle: Hashable) -> TrialOutcome:
        """What an ended trial returned; ``WorkerLost`` when its worker died first."""

    @abstractmethod
    def stop(self, handles: list[Hashable], force: bool = False) -> None:
        """Ask running trials to checkpoint and return (status ``interrupted``); ``force``: end them now."""

    def run(self, store: Store, listener: SweepListener, show_progress: bool = False) -> bool:
        # No progress bars from the workers (show_progress): several at once would garble each other.
        owner = Owner.current()
        study_dir = store.study_dir.resolve()  # workers may run in another folder, or on another node
        running: dict[Hashable, _InFlight] = {}
        claiming = True
        try:
            workers = self.open()
            while True:
                while claiming and len(running) < workers:
                    with _ctrl_c_deferred():
                        if (trial := store.claim(owner)) is None:
                            break
                        self._start(trial, study_dir, store, owner, running)
                        listener.trial_started(trial)
                if not running:
                    return claiming
                for handle in self.wait(list(running)):
                    with _ctrl_c_deferred():
                        outcome = self._collect(handle, running, store, owner, listener, stopping=False)
                    claiming = claiming and outcome.status != "interrupted"  # a worker stopped by hand: claim no more
        except KeyboardInterrupt:
            return False
        finally:  # Ctrl-C, or an error here: stop what still runs
            self._stop_all(running, store, owner, listener)
            self.close()

    def _start(self, trial: TrialRow, study_dir: Path, store: Store, owner: Owner,
               running: dict[Hashable, _InFlight]) -> None:
        config = trial_config(study_dir, trial)
        try:
            handle = self.start(config)
        except Exception:
            store.release(trial.key, owner)
            raise
        running[handle] = _InFlight(trial, config, store.heartbeat(trial.key, owner).__enter__(), time.perf_counter())

    def _collect(self, handle: Hashable, running: dict[Hashable, _InFlight], store: Store, owner: Owner,
                 listener: SweepListener, stopping: bool) -> TrialOutcome:
        """Record an ended trial in the store, or put it back in the queue when it was stopped (while stopping, a
        lost worker counts as stopped)."""
        in_flight = running.pop(handle)
        try:
            outcome = self.result(handle)
        except WorkerLost as error:
            outcome = failed_outcome(in_flight.config, f"WorkerLost: {error}", time.perf_counter() - in_flight.started)
        in_flight.heartbeat.__exit__(None, None, None)
        if outcome.status == "interrupted" or (stopping and outcome.status == "failed"):
            store.release(in_flight.trial.key, owner)
        else:
            store.finish(in_flight.trial.key, owner, outcome)
        listener.trial_finished(in_flight.trial, outcome)
        return outcome

    def _stop_all(self, running: dict[Hashable, _InFlight], store: Store, owner: Owner,
                  listener: SweepListener) -> None:
        """Each running trial checkpoints at the end of its step and goes back to the queue, for the next sweep to
        resume; one that finished meanwhile is recorded. A second Ctrl-C ends them at once: they resume from their
        last periodic checkpoint instead."""
        if not running:
            return
        self.stop(list(running))
        try:
            while running:
                for handle in self.wait(list(running)):
                    with _ctrl_c_deferred():
                        self._collect(handle, running, store, owner, listener, stopping=True)
        except KeyboardInterrupt:
            with _ctrl_c_deferred():
                self.stop(list(running), force=True)
                for in_flight in running.values():
                    in_flight.heartbeat.__exit__(None, None, None)
                    store.release(in_flight.trial.key, owner)
                running.clear()


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Holds a Ctrl-C back until the block has run, so that the store and the trials in flight are never left half
    updated: a claimed trial is always in flight (to be released), a recorded one never."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


class LocalExecutor(ConcurrentExecutor):
    """Trials on this machine. With one worker (the default without several GPUs), one after another in this
    process; with more, each in a worker process of its own, pinned to one GPU (round robin over the visible ones)
    and given an equal share of this process's torch threads. Workers are spawned, so they import the main module:
    a script that calls ``sweep()`` with several workers needs the ``if __name__ == "__main__":`` guard."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.gpus = visible_gpus()
        self.workers = workers or max(1, len(self.gpus))
        self._free_slots: list[int] = []

    def run(self, store: Store, listener: SweepListener, show_progress: bool = False) -> bool:
        if self.workers > 1:
            return super().run(store, listener, show_progress)
        owner = Owner.current()
        while (trial := store.claim(owner)) is not None:
            listener.trial_started(trial)
            try:
                with store.heartbeat(trial.key, owner):
                    outcome = run_trial(trial_config(store.study_dir, trial), show_progress)
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, resume from the last checkpoint next time
                store.release(trial.key, owner)
                raise
            if outcome.status == "interrupted":
                store.release(trial.key, owner)
                listener.trial_finished(trial, outcome)
                return False
            store.finish(trial.key, owner, outcome)
            listener.trial_finished(trial, outcome)
        return True

    def open(self) -> int:
        self._free_slots = list(range(self.workers))
        return self.workers

    def start(self, config: TrainConfig) -> WorkerProcess:
        slot = self._free_slots.pop(0)
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        threads = max(1, torch.get_num_threads() // self.workers)
        # spawn, not fork: a forked child cannot use CUDA, and must not inherit this process's threads.
        context = multiprocessing.get_context("spawn")
        results, sender = context.Pipe(duplex=False)
        process = context.Process(target=_trial_process, args=(config, gpu, threads, os.getpid(), sender),
                                  name=f"trial-{Path(config.out).name}")
        process.start()
        sender.close()  # the worker holds the only sending end now: its death reads as end of file
        return WorkerProcess(process, results, slot)

    def wait(self, handles: list[WorkerProcess]) -> list[WorkerProcess]:
        ready = connection.wait([handle.results for handle in handles])
        return [handle for handle in handles if handle.results in ready]

    def result(self, handle: WorkerProcess) -> TrialOutcome:
        try:
            outcome = handle.results.recv()
        except EOFError:  # it died before sending
            outcome = None
        handle.results.close()
        handle.process.join()
        self._free_slots.append(handle.slot)
        if outcome is None:
            raise WorkerLost(f"the worker process ended with exit code {handle.process.exitcode}")
        return outcome

    def stop(self, handles: list[WorkerProcess], force: bool = False) -> None:
        for handle in handles:
            if force:
                handle.process.kill()
            elif handle.process.exitcode is None:  # still running (its pid is not someone else's)
                os.kill(handle.process.pid, signal.SIGINT)  # train() checkpoints at the end of the step
        if force:
            for handle in handles:
                handle.process.join()


@dataclass(eq=False)
class WorkerProcess:
    process: multiprocessing.process.BaseProcess
    results: connection.Connection
    slot: int  # which worker it is, for its GPU


def _trial_process(config: TrainConfig, gpu: str | None, threads: int, coordinator: int,
                   results: connection.Connection) -> None:
    """A local worker: run one trial and send its outcome to the coordinator."""
    os.setpgrp()  # Ctrl-C in the terminal reaches the coordinator alone, which asks each worker to stop, once
    _die_with_coordinator(coordinator)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # read when CUDA initialises, which importing torch does not do
    torch.set_num_threads(threads)
    try:
        outcome = run_trial(config)
    except KeyboardInterrupt:  # stopped before training began (or twice): nothing new to keep
        outcome = TrialOutcome("interrupted")
    results.send(outcome)


PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with_coordinator(coordinator: int) -> None:
    """A worker must not outlive its coordinator: the next sweep resumes the trial, and two runs would write one
    folder. On Linux the kernel kills the worker the moment the coordinator dies (a parent-death signal, which the
    standard library does not expose, hence ctypes); elsewhere a thread checks the parent every second."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_exit_when_orphaned, args=(coordinator,), daemon=True).start()
    if os.getppid() != coordinator:  # it died before the signal was armed
        os._exit(1)


def _exit_when_orphaned(coordinator: int) -> None:
    while os.getppid() == coordinator:
        time.sleep(1.0)
    os._exit(1)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` names them for a child process."""
    count = torch.cuda.device_count()
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [name.strip() for name in named.split(",")][:count] if named else [str(i) for i in range(count)]


def _ray_executor(**options) -> Executor:
    from .ray_executor import RayExecutor  # imports ray, an optional extra

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {LocalExecutor.name: LocalExecutor, "ray": _ray_executor}


def get_executor(name: str, *, workers: int | None = None, address: str | None = None) -> Executor:
    """``workers``: how many trials run at once (default: one per visible GPU, or what the Ray cluster can hold);
    ``address``: the Ray cluster to use (default: start one on this machine)."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(sorted(EXECUTORS))}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if address is None:
        return EXECUTORS[name](workers=workers)
    if name != "ray":
        raise ValueError(f"an address names a Ray cluster: it needs the ray executor, not {name!r}")
    return EXECUTORS[name](workers=workers, address=address)


def trial_config(study_dir: Path, trial: TrialRow) -> TrainConfig:
    """The trial's config, writing to its folder in the study folder as it is now (the folder may have moved)."""
    config = TrainConfig.from_dict(trial.config)
    config.out = str(trial_folder(study_dir, trial.key))
    return config


LOCK_WAIT_SECONDS = 60.0


@contextlib.contextmanager
def _trial_lock(folder: Path) -> Iterator[None]:
    """Hold the trial's lock (``trials/.KEY.lock``, an advisory ``flock``) while its run writes the folder. A trial
    reclaimed from a dead coordinator waits here until every process of the old attempt is gone (the kernel
    releases a dead process's locks), so two runs never write one folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+") as lock:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{folder} is still being written by another process after "
                                       f"{LOCK_WAIT_SECONDS:.0f} s; stop it, then run the sweep again") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_trial(config: TrainConfig, show_progress: bool = False) -> TrialOutcome:
    """Train one trial (resuming from its folder's checkpoint if it has one); its outcome is what ``train``
    returned. Any exception becomes a ``failed`` outcome carrying the message, so one bad trial never ends a
    sweep."""
    started = time.perf_counter()
    try:
        with _trial_lock(config.out_dir):
            result = train(config, show_progress=show_progress)
    except Exception as error:
        return failed_outcome(config, f"{type(error).__name__}: {error}", time.perf_counter() - started)
    record = result.record.to_dict()
    return TrialOutcome(result.status, result.steps_completed, time.perf_counter() - started, None,
                        [step.to_dict() for step in result.steps], result.evaluations, record["environment"], record,
                        result.predictions)


def failed_outcome(config: TrainConfig, error: str, seconds: float) -> TrialOutcome:
    """A failed attempt, with the steps and evaluations its run files recorded before it failed."""
    steps = read_jsonl(config.out_dir / "metrics.jsonl")
    return TrialOutcome("failed", len(steps), seconds, error, steps, read_jsonl(config.out_dir / "evals.jsonl"))
