"""Pre-training throughput of `adamlab train` against a bare torch loop, and optimizer state memory per optimizer.

Both train the same from-scratch model (default ``llama-tiny``) on the same packed C4 sequences in the same order
with AdamW and clipping at 1.0; the bare loop is what a user would write (HF loss, backward, clip, step) without
adamlab's bookkeeping (token-normalised loss, gradient and update norms, per-step JSONL and memory records,
checkpoint-ready state). Rounds alternate between the two; reported: median tokens/s per step and the ratio.
Then each optimizer of the CPU pre-training study takes one step on the model and its state is measured
(``adamlab.optim.memory.optimizer_state_bytes``). Writes JSON.

    python benchmarks/pretrain_throughput.py
    python benchmarks/pretrain_throughput.py --model llama-60m --tokenizer byte-level --max-seq-len 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from adamlab.encoding import collate, pack_documents
from adamlab.models import load_model
from adamlab.optim import create_optimizer
from adamlab.optim.memory import optimizer_state_bytes
from adamlab.tasks import get_task
from adamlab.training import TrainConfig, train
from adamlab.training.order import ExampleOrder

from bare_loop import bare_step_seconds  # benchmarks/bare_loop.py, next to this script

TARGET = 0.95
# The optimizers of studies/specs/pretrain_cpu.yaml, with its hyperparameters that change state size.
OPTIMIZERS = {"adamw": {}, "adam_mini": {}, "ldadam": {"rank": 32}, "lion": {}, "adabelief": {}}


def bare_loop_step_seconds(args: argparse.Namespace) -> list[float]:
    """model(input_ids, labels).loss -> backward -> clip -> AdamW.step(), on adamlab's packed rows and order."""
    loaded = load_model(args.model, seed=args.seed, tokenizer=args.tokenizer)
    model, tokenizer = loaded.model, loaded.tokenizer
    documents = [e.text for e in get_task(args.task).load("train", limit=args.documents)]
    rows = pack_documents(tokenizer, documents, args.max_seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = ExampleOrder(len(rows), args.batch_size, args.seed)
    return bare_step_seconds(model, rows, tokenizer.pad_token_id, optimizer, order, args.steps)


def adamlab_step_seconds(args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(model=args.model, task=args.task, out=out, tokenizer=args.tokenizer, lora=None,
                             optimizer="adamw", lr=1e-3, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                             max_seq_len=args.max_seq_len, train_limit=args.documents, eval_limit=1,
                             checkpoint_every=0)
        train(config, show_progress=False)
        return [json.loads(line)["step_seconds"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def state_bytes(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Optimizer state after one step on one batch, per optimizer, next to the parameters' own size."""
    results = {}
    for name, hparams in OPTIMIZERS.items():
        loaded = load_model(args.model, seed=args.seed, tokenizer=args.tokenizer)
        model, tokenizer = loaded.model, loaded.tokenizer
        rows = pack_documents(tokenizer, [e.text for e in get_task(args.task).load("train", limit=4)], args.max_seq_len)
        optimizer = create_optimizer(name, model, lr=1e-3, **hparams)
        model(**collate(rows[:2], tokenizer.pad_token_id)).loss.backward()
        optimizer.step()
        parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        results[name] = {"state_bytes": optimizer_state_bytes(optimizer), "parameter_bytes": parameter_bytes}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-tiny")
    parser.add_argument("--tokenizer", default=None, help="default: the model's")
    parser.add_argument("--task", default="c4")
    parser.add_argument("--documents", type=int, default=200, help="training documents tokenised and packed")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "pretrain_throughput.json")
    args = parser.parse_args()

    console = Console()
    tokens_per_step = args.batch_size * (args.max_seq_len + 1)  # every row is full while the data lasts
    samples = {"bare torch": [], "adamlab train": []}
    for round_ in range(args.rounds):
        for label, run in (("bare torch", bare_loop_step_seconds), ("adamlab train", adamlab_step_seconds)):
            seconds = run(args)[1:]  # the first step pays one-off allocation costs in both
            samples[label] += seconds
            console.log(f"round {round_ + 1}: {label} {tokens_per_step / statistics.median(seconds):.0f} tokens/s")
    throughput = {label: tokens_per_step / statistics.median(s) for label, s in samples.items()}
    ratio = throughput["adamlab train"] / throughput["bare torch"]
    console.print(f"{args.model} on {args.task}: adamlab {throughput['adamlab train']:.0f} tokens/s, bare loop "
                  f"{throughput['bare torch']:.0f} tokens/s, ratio {ratio:.3f} (target >= {TARGET})")
    memory = state_bytes(args)
    for name, sizes in memory.items():
        console.print(f"{name}: state {sizes['state_bytes'] / 2**20:.2f} MiB "
                      f"({sizes['state_bytes'] / sizes['parameter_bytes']:.2f}x the parameters)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "pretrain_throughput",
                                     "config": {k: v for k, v in vars(args).items() if k != "json"},
                                     "tokens_per_second": throughput, "ratio": ratio, "target": TARGET,
                                     "optimizer_state": memory, "torch_threads": torch.get_num_threads()},
                                    indent=2))


if __name__ == "__main__":
    main()
