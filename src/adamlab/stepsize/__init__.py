"""The data-dependent step size of AdamDDS: Hessian-vector products, the Hessian's spectral norm, the step-size
estimate with its diagnostics, the learning-rate range test to compare it with, and the ``adam_dds`` optimizer.

    from adamlab.stepsize import estimate_for_training
    estimate = estimate_for_training(model, head, encoded, pad_id, batch_size=16, total_steps=3125, samples=256,
                                     seed=0)
    estimate.alpha, estimate.alpha(0.5), estimate.alpha_interval
    estimate.save("lr.json"); create_optimizer("adam_dds", model, estimate="lr.json", multiplier=0.5)
"""

from .estimate import (
    FROM_PRESET,
    PRESETS,
    GroupEstimate,
    StepsizeEstimate,
    by_lora_matrix,
    constant_stepsize,
    estimate_for_config,
    estimate_for_training,
    estimate_stepsize,
    estimator_settings,
    resolve_horizon,
    training_loss,
)
from .hvp import HVP_ENGINES, HessianVectorProduct, trainable_parameters
from .optimizer import AdamDDS
from .range_test import RangeTestResult, lr_range_test
from .spectral import METHODS, SpectralNormResult, hessian_spectral_norm, spectral_norm

__all__ = [
    "FROM_PRESET",
    "HVP_ENGINES",
    "METHODS",
    "PRESETS",
    "AdamDDS",
    "GroupEstimate",
    "HessianVectorProduct",
    "RangeTestResult",
    "SpectralNormResult",
    "StepsizeEstimate",
    "by_lora_matrix",
    "constant_stepsize",
    "estimate_for_config",
    "estimate_for_training",
    "estimate_stepsize",
    "estimator_settings",
    "hessian_spectral_norm",
    "lr_range_test",
    "resolve_horizon",
    "spectral_norm",
    "trainable_parameters",
    "training_loss",
]
