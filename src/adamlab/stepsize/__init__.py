"""The data-dependent step size of AdamDDS: Hessian-vector products, the Hessian's spectral norm, the step-size
estimate with its diagnostics, the learning-rate range test to compare it with, and the ``AdamDDS`` optimizer.

    from adamlab.stepsize import AdamDDS, estimate_stepsize
    estimate = estimate_stepsize(model, loss_fn, data, total_steps=3125)  # loss_fn(model, batch) -> scalar
    estimate.alpha, estimate.alpha(0.5), estimate.alpha_interval
    estimate.save("lr.json"); AdamDDS(model.parameters(), estimate="lr.json", multiplier=0.5)

This package knows nothing of models, tasks or runs: ``adamlab.training`` runs it on a trial's own loss and data
(``estimate_for_training``, ``estimate_for_config``) and resolves a run's learning rate from it.
"""

from .estimate import (
    FROM_PRESET,
    PRESETS,
    GroupEstimate,
    StepsizeEstimate,
    by_lora_matrix,
    constant_stepsize,
    estimate_stepsize,
    estimator_settings,
    resolve_horizon,
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
    "estimate_stepsize",
    "estimator_settings",
    "hessian_spectral_norm",
    "lr_range_test",
    "resolve_horizon",
    "spectral_norm",
    "trainable_parameters",
]
