"""Worker for test_ldadam_ddp.py, run by ``torch.distributed.run --nproc_per_node 2``: trains a DDP-wrapped tiny model
with LDAdamW on CPU (gloo), each rank on half of every global batch, and on rank 0 the same model in one process on
the whole batches. Writes, per ``ef_storage``, the largest parameter difference from the one-process run and between
the ranks to the JSON file named by argv[1]."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adamlab.optim.ldadam import LDAdamW, ldadam_param_groups

STEPS, BATCH = 20, 16


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(12, 32)  # not a target: AdamW
        self.attn = nn.Linear(32, 48)  # low-rank, left projection
        self.mlp = nn.Linear(48, 32)  # low-rank, right projection
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.mlp(torch.tanh(self.attn(torch.tanh(self.embed(x)))))))


def build(ef_storage):
    torch.manual_seed(0)
    model = Tiny().double()
    return model, LDAdamW(ldadam_param_groups(model, rank=4), lr=1e-2, weight_decay=0.01, ef_storage=ef_storage)


def batches():
    gen = torch.Generator().manual_seed(1234)
    for _ in range(STEPS):
        yield (
            torch.randn(BATCH, 12, generator=gen, dtype=torch.float64),
            torch.randn(BATCH, 4, generator=gen, dtype=torch.float64),
        )


def train(model, optimizer, shard):
    for x, y in batches():
        nn.functional.mse_loss(model(x[shard]), y[shard]).backward()
        optimizer.step()
        optimizer.zero_grad()


def main(out):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = BATCH // world
    result = {}
    for ef_storage in ("state", "grad"):
        model, optimizer = build(ef_storage)
        train(DistributedDataParallel(model), optimizer, slice(rank * per_rank, (rank + 1) * per_rank))
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            single, single_optimizer = build(ef_storage)
            train(single, single_optimizer, slice(None))
            reference = torch.cat([p.detach().flatten() for p in single.parameters()])
            result[ef_storage] = {
                "vs_one_process": (flat - reference).abs().max().item(),
                "across_ranks": max((g - flat).abs().max().item() for g in gathered),
                "moved": (flat - torch.cat([p.detach().flatten() for p in build(ef_storage)[0].parameters()]))
                .abs()
                .max()
                .item(),
            }
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
