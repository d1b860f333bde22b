"""Optional packages and the pip extra that installs each: one clear line when a missing one is needed.

The core install runs the optimizers, schedules, training and studies on the bundled task samples; the rest is
opt-in (pyproject.toml's ``[project.optional-dependencies]``). ``require`` is checked before any work starts, so a
missing package ends a command with exit code 2 (``MissingDependencyError`` is bad input), never mid-run.
"""

from __future__ import annotations

import importlib.util

# accelerate tracker name -> the module it needs; each module's extra has the same name as the tracker.
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}

__all__ = ["MissingDependencyError", "TRACKERS", "check_trackers", "is_installed", "require"]


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the pip extra that provides it."""


def is_installed(module: str) -> bool:
    # find_spec only locates the module: nothing heavy is imported to answer.
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str, purpose: str) -> None:
    """Raise ``MissingDependencyError`` naming ``pip install 'adamlab[extra]'`` unless ``module`` is installed."""
    if not is_installed(module):
        raise MissingDependencyError(f"{purpose} needs the {module!r} package: pip install 'adamlab[{extra}]'")


def check_trackers(trackers: list[str]) -> None:
    """Every tracker is one adamlab logs to, and its package is installed."""
    for tracker in trackers:
        if tracker not in TRACKERS:
            raise ValueError(f"unknown tracker {tracker!r}; valid trackers: {', '.join(TRACKERS)}")
        require(TRACKERS[tracker], tracker, f"--tracker {tracker}")
