"""LDAdamW under DDP: two CPU processes (gloo), each on half of every global batch, end where one process on the
whole batches ends. Each rank computes its projector from the averaged gradient, so the ranks stay identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ddp_worker_ldadam.py")


def test_two_ddp_processes_match_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    # "grad" is the official buffer in p.grad: DDP averages buffer + local gradient, which is buffer + mean gradient.
    for ef_storage in ("state", "grad"):
        assert result[ef_storage]["across_ranks"] == 0.0
        assert result[ef_storage]["vs_one_process"] <= 1e-12  # fp64; only the all-reduce's summation order differs
        assert result[ef_storage]["moved"] > 1e-2
