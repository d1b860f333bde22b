"""A finished study written straight into a store, without training (the report cannot tell): three fixed-lr arms as
in tests/studies/test_reports.py, plus a dds arm whose two configurations carry a step-size estimate with an
interval, and per-step memory and throughput."""

from __future__ import annotations

import json

import pytest

from adamlab.studies import Owner, Store, TrialOutcome, expand_trials, parse_spec

from ..studies.tiny import TINY_SPEC

SPEC = TINY_SPEC + """\
  - name: lion_small
    optimizer: lion
    lr: 1e-4
  - name: adamdds
    optimizer: adam
    lr: dds x0.5, x2
dds:
  alpha:
    tiny-llama: {ag_news: 4e-3}
"""
ACCURACY = {("adam", 0): 0.5, ("adam", 1): 0.7, ("adamw-cosine", 0): 0.8, ("adamw-cosine", 1): 0.9,
            ("lion_small", 0): 0.75, ("adamdds", 0): 0.6, ("adamdds", 1): 0.65}  # lion_small seed 1 diverges
# What estimate_for_config records (its main fields), as trials.py stores it for a dds learning rate.
ESTIMATE = {"source": "estimated", "alpha": 4e-3, "alpha_interval": [3e-3, 6e-3], "confidence": 0.9, "bootstrap": 200,
            "K_hat": 41.5, "L0": 2.3, "T": 3, "aggregate": "max"}


@pytest.fixture
def study_dir(tmp_path):
    spec = parse_spec(SPEC, "study.yaml")
    store = Store.open(tmp_path, create=True)
    store.register(spec, expand_trials(spec, tmp_path))
    for trial in store.trials():  # the published α in the spec becomes an estimate with a bootstrap interval
        if trial.stepsize_estimate is not None:
            estimate = {**ESTIMATE, "multiplier": trial.stepsize_estimate["multiplier"]}
            store.db.execute("UPDATE trials SET stepsize_estimate = ? WHERE key = ?", (json.dumps(estimate), trial.key))
    owner = Owner.current()
    while (trial := store.claim(owner)) is not None:
        accuracy = ACCURACY.get((trial.arm, trial.seed))
        if trial.arm == "adamdds":
            accuracy += 0.1 * (trial.lr > 4e-3)  # the x2 configuration does better
        status = "done" if accuracy is not None else "diverged"
        evaluations = [{"step": 3, "accuracy": accuracy, "weighted_f1": accuracy / 2, "n_total": 8, "n_invalid": 1,
                        "seconds": 0.5}] if accuracy is not None else []
        rank = trial.position % 5  # the configuration: curves that differ, so a plot that shows nothing stands out
        steps = [{"step": s, "loss": 2.0 - s * (1 + rank) / 20 - trial.seed / 4, "lr": trial.lr * (1 + s / 10),
                  "tokens_per_second": 1000.0 * (1 + rank) + 100 * s, "rss_bytes": 2**30 + s * 2**20 * (1 + rank),
                  "peak_rss_bytes": 2**31} for s in (1, 2, 3)]
        store.finish(trial.key, owner, TrialOutcome(status, 3, 1.0, None, steps, evaluations,
                                                    {"python": "3.11", "packages": {"torch": "2"},
                                                     "hardware": {"cpu_threads": 2, "machine": "x86_64 <test>"}}))
    store.close()
    return tmp_path
