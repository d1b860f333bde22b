"""Adam-family optimizers as drop-in ``torch.optim.Optimizer``s, and one name registry for them and their peers."""

from . import registry
from .adabelief import AdaBelief
from .adabound import AdaBound
from .adam_mini import AdamMini
from .came import CAME
from .fused import fused_optimizer_args
from .hybrid_adam_sgd import HybridAdamSGD
from .ldadam import LDAdamW, ldadam_param_groups
from .lion import Lion
from .lookahead import Lookahead
from .memory import optimizer_state_bytes
from .registry import (
    MissingDependencyError,
    available_optimizers,
    create_optimizer,
    no_weight_decay,
    param_groups,
)
from .switch import Switch
from .yogi import Yogi

__all__ = [
    "CAME",
    "AdaBelief",
    "AdaBound",
    "AdamMini",
    "HybridAdamSGD",
    "LDAdamW",
    "Lion",
    "Lookahead",
    "MissingDependencyError",
    "Switch",
    "Yogi",
    "available_optimizers",
    "create_optimizer",
    "fused_optimizer_args",
    "ldadam_param_groups",
    "no_weight_decay",
    "optimizer_state_bytes",
    "param_groups",
    "registry",
]
