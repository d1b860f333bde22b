"""Fine-tuning: one trial = one model, task, optimizer configuration, schedule and seed."""

from .config import TrainConfig
from .estimates import estimate_for_config, estimate_for_training
from .loop import RunMismatchError, TrainResult, train

__all__ = ["RunMismatchError", "TrainConfig", "TrainResult", "estimate_for_config", "estimate_for_training", "train"]
