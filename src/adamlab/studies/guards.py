"""Guards: which results may never be recommended, and why.

A configuration is excluded, with its reason recorded, when its run diverged or failed, when it predicts the same
answer for every evaluation example (a collapse that can still score the majority-class share), or when its score
is within one standard error of the majority-class baseline (what always answering the commonest class scores).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .confidence import binomial_se


def majority_baseline(labels: Sequence[Any]) -> float:
    """The score of always answering the commonest gold answer (chance for balanced classes)."""
    if not labels:
        raise ValueError("no evaluation examples")
    return Counter(labels).most_common(1)[0][1] / len(labels)


def exclusion_reason(status: str, predictions: Sequence[Any], score: float | None, baseline: float,
                     error: str | None = None) -> str | None:
    """Why a run's result must not be selected, or None when it may be."""
    if status == "diverged":
        return "diverged"
    if status not in ("done", "paused"):
        return f"failed: {error}" if error else status
    if score is None or score != score:
        return "no score"
    if len(predictions) > 1 and len({repr(p) for p in predictions}) == 1:
        return "constant predictions"
    margin = binomial_se(baseline, len(predictions))
    if score <= baseline + margin:
        return f"at or below the majority-class baseline ({baseline:.3f} + 1 SE {margin:.3f})"
    return None
