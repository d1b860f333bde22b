"""Step sizes from the data: the AdamDDS step size (Hessian-vector products, the Hessian's spectral norm, the
estimate with its diagnostics), the learning-rate range test to compare it with, and the ``AdamDDS`` optimizer.

    from adamlab.stepsize import AdamDDS, estimate_stepsize
    estimate = estimate_stepsize(model, loss_fn, data, total_steps=3125)  # loss_fn(model, batch) -> scalar
    estimate.alpha, estimate.alpha(0.5), estimate.alpha_interval
    estimate.save("lr.json"); AdamDDS(model.parameters(), estimate="lr.json", multiplier=0.5)

One module per concern: ``formula`` (alpha and the aggregation of curvatures), ``record`` (``StepsizeEstimate`` and
its JSON), ``estimate`` (the driver), ``presets`` (settings and their checks), ``spectral`` and ``hvp`` (the
curvature), ``range_test``, ``optimizer``. This package knows nothing of models, tasks or runs:
``adamlab.training`` runs it on a trial's own loss and data and resolves a run's learning rate from it
(``adamlab.training.lr_source``, where learning-rate methods are registered).
"""

from .estimate import by_lora_matrix, estimate_stepsize
from .optimizer import AdamDDS
from .presets import PRESETS
from .range_test import RangeTestResult, lr_range_test
from .record import StepsizeEstimate
from .spectral import hessian_spectral_norm

__all__ = [
    "PRESETS",
    "AdamDDS",
    "RangeTestResult",
    "StepsizeEstimate",
    "by_lora_matrix",
    "estimate_stepsize",
    "hessian_spectral_norm",
    "lr_range_test",
]
