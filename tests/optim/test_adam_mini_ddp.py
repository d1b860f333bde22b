"""AdamMini on two CPU ranks (gloo): under DDP, each rank on half of every global batch, it ends where one process on
the whole batch ends; vectors split over the ranks step as the whole vectors do in one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from . import ddp_worker_adam_mini as worker

# Only the rounding of the gradient average differs between the runs (fp64): measured ~1e-15.
TOLERANCE = 1e-10


def test_two_ranks_match_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(worker.__file__)), str(out)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-4000:]
    ranks = torch.load(out)

    # The world size is the process group's (the reference reads the GPU count: 0 here), and the norms, the
    # tensor-rule parameters, are reduced across the two ranks every step.
    assert ranks["world_size"] == 2
    assert ranks["reduced_across_ranks"] == [
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
    ]
    assert ranks["max_difference_between_ranks"] == 0.0

    _, whole = worker.train_sharded(rank=None)
    assert ranks["sharded_reduced_across_ranks"] == ["a.norm.weight"]
    for name, expected in whole.items():
        torch.testing.assert_close(ranks["sharded"][name], expected, atol=1e-12, rtol=0, msg=name)

    model = worker.build_model()
    worker.train(model, model, lambda tokens: tokens)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ranks["params"][name], param.detach(), atol=TOLERANCE, rtol=0, msg=name)
