"""What a run records: per-step JSONL, memory, the environment, and a progress bar."""

from __future__ import annotations

import platform
import resource
import sys
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
