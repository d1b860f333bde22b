"""Fine-tuning: one trial = one model, task, optimizer configuration, schedule and seed."""

from .config import TrainConfig
from .loop import RunMismatchError, TrainResult, train

__all__ = ["RunMismatchError", "TrainConfig", "TrainResult", "train"]
