"""A process that opens new stores at agreed instants, for the race in test_store.py: says it is ready, reads the
start time from the start file, then opens (creating) the i-th folder's store at start + i * ROUND_SECONDS and
prints one line per folder: "ok" or the error."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from adamlab.studies.store import Store

ROUND_SECONDS = 0.25

start_file, ready_file, folders = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
ready_file.touch()
while not start_file.exists():
    time.sleep(0.001)
start = float(start_file.read_text())
for i, folder in enumerate(folders):
    while time.time() < start + i * ROUND_SECONDS:
        pass  # spin, not sleep: the processes should reach the file within microseconds of each other
    try:
        Store.open(folder, create=True).close()
        print("ok", flush=True)
    except Exception as error:  # reported to the test, which names it
        print(f"{type(error).__name__}: {error}", flush=True)
