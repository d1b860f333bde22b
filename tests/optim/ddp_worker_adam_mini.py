"""One rank of test_adam_mini_ddp.py: a tiny Llama under DDP (gloo, CPU), each rank on its half of every global
batch, stepped by AdamMini. Run as ``python -m torch.distributed.run --nproc_per_node 2 ddp_worker_adam_mini.py
OUT``; rank 0 saves the final parameters and what the optimizer saw of the process group to OUT."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from adamlab.optim.adam_mini import AdamMini

STEPS = 8
HPARAMS = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, dim=32, n_heads=4, n_kv_heads=2,
               verbose=False)


def build_model():
    """fp64, with attention biases and norms so every rule runs (the norms are the ones reduced across ranks)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).double()


def global_batches():
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(0, 50, (8, 17), generator=gen) for _ in range(STEPS)]


def train(model, forward, batch_of):
    """Every sequence has the same number of targets, so the mean loss of each half, averaged over the ranks by
    DDP, has the gradient of the mean loss of the whole batch."""
    optimizer = AdamMini(model.named_parameters(), **HPARAMS)
    for tokens in global_batches():
        local = batch_of(tokens)
        optimizer.zero_grad(set_to_none=True)
        forward(input_ids=local, labels=local).loss.backward()
        optimizer.step()
    return optimizer


# Vectors split over the ranks by element counts (rank 0, rank 1), as a sharded model would hold them: one block per
# tensor means the mean of g^2 over the elements of both ranks. Rank 1 holds none of b, so b is not reduced.
SHARDS = {"a.norm.weight": (6, 4), "b.norm.weight": (5, 0)}


def train_sharded(rank: int | None):
    """Rank ``rank``'s pieces of the SHARDS after 5 steps on fixed gradients (the whole vectors if None)."""
    pieces = {}
    for name, sizes in SHARDS.items():
        start = sum(sizes[:rank]) if rank is not None else 0
        stop = start + sizes[rank] if rank is not None else sum(sizes)
        pieces[name] = torch.linspace(-1, 1, sum(sizes), dtype=torch.float64)[start:stop].requires_grad_()
    optimizer = AdamMini(list(pieces.items()), **HPARAMS)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        for name, sizes in SHARDS.items():
            grad = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
            start = sum(sizes[:rank]) if rank is not None else 0
            pieces[name].grad = grad[start:start + pieces[name].numel()]
        optimizer.step()
    return optimizer, {name: piece.detach() for name, piece in pieces.items()}


def main(out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model()
    optimizer = train(model, DistributedDataParallel(model), lambda tokens: tokens.chunk(world)[rank])

    sharded_optimizer, pieces = train_sharded(rank)
    all_pieces = [None] * world
    dist.all_gather_object(all_pieces, pieces)

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save({
            "params": {name: p.detach() for name, p in model.named_parameters()},
            "max_difference_between_ranks": max((g - flat).abs().max().item() for g in gathered),
            "world_size": optimizer.world_size,
            "reduced_across_ranks": _reduced(optimizer),
            "sharded": {name: torch.cat([p[name] for p in all_pieces]) for name in SHARDS},
            "sharded_reduced_across_ranks": _reduced(sharded_optimizer),
        }, out)
    dist.destroy_process_group()



def _reduced(optimizer: AdamMini) -> list[str]:
    return sorted(g["name"] for g in optimizer.param_groups if g["params"][0] in optimizer._shared_numel)


if __name__ == "__main__":
    main(sys.argv[1])
