"""What a run records: per-step JSONL, memory, a utilisation timeline, the environment, and a progress bar."""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..atomic import append_jsonl, finite_record, read_jsonl, rewrite_jsonl, write_text

PACKAGES = ("adamlab", "torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes")


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    hardware = {"machine": platform.machine(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name()
        hardware["gpu_count"] = torch.cuda.device_count()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions, "hardware": hardware}


def _rss_bytes() -> int:
    try:  # Linux: the current resident set, not just the peak
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory() -> dict[str, Any]:
    """CUDA peak and utilisation when a GPU is in use, process memory otherwise."""
    if not torch.cuda.is_available():
        return {"rss_bytes": _rss_bytes(), "peak_rss_bytes": peak_rss_bytes()}
    stats = {"cuda_allocated_bytes": torch.cuda.memory_allocated(), "cuda_peak_bytes": torch.cuda.max_memory_allocated()}
    try:
        stats["gpu_utilization"] = torch.cuda.utilization()  # NVML, through torch
    except Exception:  # no NVML library: the figure is optional
        pass
    return stats


class JsonlLog:
    """Append-only JSON lines, strict JSON (a non-finite value is written as null and flagged under "nonfinite").
    On resume the file is rewritten, atomically, with the records up to the checkpoint's step: lines past it and a
    last line torn by a kill are dropped, so the log reads as one run."""

    def __init__(self, path: Path, resume_step: int | None = None, key: str = "step"):
        self.path = path
        self.kept: list[dict[str, Any]] = []  # the records of the run before the resumed step
        if resume_step is None:
            write_text(path, "")
        elif path.exists():
            self.kept = [record for record in read_jsonl(path) if record[key] <= resume_step]
            rewrite_jsonl(path, self.kept)

    def write(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, [finite_record(record)])


UTILISATION_FILE = "utilisation.jsonl"  # in the run folder, next to metrics.jsonl
SAMPLE_SECONDS = 1.0
Probe = Callable[[], dict[str, Any]]


class UtilisationSampler:
    """The device's utilisation over time, sampled on a timer thread so evaluation, data loading and long steps
    show as well as the steps themselves: NVML's GPU utilisation and memory where a GPU and pynvml exist, else the
    process's CPU utilisation (percent of one core, so above 100 with several threads) and resident set, through
    psutil when installed, else /proc.

    Each sample is a line ``{"step", "seconds", "source", ...}`` of ``log``: the step finished when it was taken
    and the wall seconds since the run began (continuing a resumed run's timeline). A threading.Timer per sample
    would drift and cost a thread each time; one thread waiting on an Event stops at once when asked."""

    def __init__(self, log: JsonlLog, step: Callable[[], int], interval: float = SAMPLE_SECONDS,
                 probe: Probe | None = None):
        if not interval > 0:
            raise ValueError(f"the sampling interval must be > 0 seconds, got {interval!r}")
        self.log, self.step, self.interval = log, step, interval
        self.probe = probe or utilisation_probe()
        self.offset = log.kept[-1]["seconds"] if log.kept else 0.0
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="adamlab-utilisation", daemon=True)

    def start(self) -> UtilisationSampler:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling after one last sample (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def sample(self) -> dict[str, Any]:
        record = {"step": self.step(), "seconds": self.offset + time.perf_counter() - self._started, **self.probe()}
        self.log.write(record)
        return record

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def utilisation_probe() -> Probe:
    """The best utilisation source this process has: NVML, psutil, /proc (in that order)."""
    return _nvml_probe() or _psutil_probe() or _proc_probe()


def _nvml_probe() -> Probe | None:
    if not torch.cuda.is_available():
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        # By UUID: NVML numbers every GPU, torch only those CUDA_VISIBLE_DEVICES shows.
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # no driver library or an unknown device: fall back to the process's figures
        return None

    def probe() -> dict[str, Any]:
        return {"source": "nvml", "gpu_utilization": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                "gpu_memory_bytes": pynvml.nvmlDeviceGetMemoryInfo(handle).used}
    return probe


def _psutil_probe() -> Probe | None:
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process()
    process.cpu_percent(None)  # the first call starts the interval the next one measures

    def probe() -> dict[str, Any]:
        return {"source": "psutil", "cpu_percent": process.cpu_percent(None), "rss_bytes": process.memory_info().rss}
    return probe


def _proc_probe() -> Probe:
    """CPU time (user + system, /proc/self/stat's 14th and 15th fields) over wall time since the last sample."""
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / ticks

    last = [cpu_seconds(), time.perf_counter()]

    def probe() -> dict[str, Any]:
        cpu, now = cpu_seconds(), time.perf_counter()
        percent = 100.0 * (cpu - last[0]) / (now - last[1]) if now > last[1] else 0.0
        last[:] = [cpu, now]
        return {"source": "proc", "cpu_percent": percent, "rss_bytes": _rss_bytes()}
    return probe


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
