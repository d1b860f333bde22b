"""A coordinator without training, for the claim race in test_store.py: says it is ready, waits for the start file,
then claims and finishes trials (each with one step row and one evaluation) until none is left, and prints the keys
it ran."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from adamlab.studies.store import Owner, Store, TrialOutcome

study_dir, start_file, ready_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready_file.touch()
while not start_file.exists():
    time.sleep(0.001)
store = Store.open(study_dir)
owner = Owner.current()
ran = []
while (trial := store.claim(owner)) is not None:
    ran.append(trial.key)
    time.sleep(0.005)  # a little work, so the coordinators interleave
    outcome = TrialOutcome("done", 1, 0.0, None, [{"step": 1, "loss": 1.0, "lr": trial.lr}],
                           [{"step": 1, "accuracy": 0.5, "seconds": 0.0}], {"worker": str(owner)})
    assert store.finish(trial.key, owner, outcome)
print(json.dumps(ran))
