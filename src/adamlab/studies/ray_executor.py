"""The ``ray`` executor: each trial a Ray task, holding one GPU where the cluster has GPUs.

``adamlab sweep --executor ray`` starts a Ray cluster on this machine (or joins the one ``RAY_ADDRESS`` names);
``--address`` points it at a running cluster (``ray start --head`` on one node, ``ray start --address ...`` on the
others), and nothing else changes. The coordinator stays in this process: it claims trials, keeps their heartbeats
fresh and writes the store; a task only trains and returns the ``TrialOutcome``.

Tasks write their checkpoints and logs into the study folder, so on a cluster of several machines every node must
reach the study folder at the same absolute path (shared storage), and have adamlab, the models and the data as
this machine has them.
"""

from __future__ import annotations

import torch

from ..optim.registry import MissingDependencyError
from ..training import TrainConfig
from .executors import ConcurrentExecutor, WorkerLost, run_trial
from .store import TrialOutcome

try:
    import ray
except ImportError as error:
    raise MissingDependencyError("the ray executor needs the 'ray' package: pip install 'adamlab[ray]'") from error


def _trial_task(config: TrainConfig, threads: int) -> TrialOutcome:
    torch.set_num_threads(threads)  # the task's share of the node; torch would take every core
    return run_trial(config)


class RayExecutor(ConcurrentExecutor):
    """Trials as Ray tasks, ``workers`` at a time (default: as many as the cluster can run at once: one per GPU, or
    one per ``cpus_per_trial`` CPUs). On an autoscaling cluster, ask for more ``workers`` than it has now: the tasks
    waiting for resources make it grow. A Ray session this process already holds (a notebook, a test) is used as it
    is, and left running."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_trial: int = 1):
        self.address, self.workers, self.cpus_per_trial = address, workers, cpus_per_trial
        self._started_ray = False

    def open(self) -> int:
        if not ray.is_initialized():
            ray.init(address=self.address)
            self._started_ray = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        # No retries: a worker that died is a failed trial, which `--retry-failed` runs again from its checkpoint.
        self._task = ray.remote(_trial_task).options(num_cpus=self.cpus_per_trial, num_gpus=1 if gpus else 0,
                                                    max_retries=0)
        return self.workers or max(1, gpus or int(resources.get("CPU", 0) // self.cpus_per_trial))

    def close(self) -> None:
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def start(self, config: TrainConfig) -> ray.ObjectRef:
        return self._task.remote(config, self.cpus_per_trial)

    def wait(self, handles: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
        ready, _ = ray.wait(handles, num_returns=1)  # Ray checks for Ctrl-C while it waits
        return ready

    def result(self, handle: ray.ObjectRef) -> TrialOutcome:
        try:
            return ray.get(handle)
        except ray.exceptions.TaskCancelledError:  # stopped before its training began, or forced
            return TrialOutcome("interrupted")
        except ray.exceptions.RayError as error:  # its worker or node died, or it could not start there
            raise WorkerLost(_first_line(error)) from error

    def stop(self, handles: list[ray.ObjectRef], force: bool = False) -> None:
        for handle in handles:
            ray.cancel(handle, force=force)  # without force, a Ctrl-C in the task: train() checkpoints and returns


def _first_line(error: Exception) -> str:
    cause = getattr(error, "cause", None)  # a RayTaskError wraps the exception raised in the worker
    shown = cause if isinstance(cause, Exception) else error
    text = str(shown).strip()
    return f"{type(shown).__name__}: {text.splitlines()[0] if text else ''}"
