"""Batched greedy generation (left padding, KV cache) against one example at a time, with identical outputs.

Both use adamlab's generation path and decoding configuration on the same examples; only the batch size differs.
Reported: examples/s of each, the speedup, and how many outputs are identical. Writes JSON.

    python benchmarks/eval_throughput.py                         # smollm2-135m on SQuAD
    python benchmarks/eval_throughput.py --examples 64 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.console import Console

from adamlab.evaluation import generate
from adamlab.models import load_model
from adamlab.tasks import get_task

TARGET = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="squad")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "eval_throughput.json")
    args = parser.parse_args()

    console = Console()
    loaded = load_model(args.model)
    loaded.model.eval()
    task = get_task(args.task)
    examples = task.load("eval", limit=args.examples)
    max_new_tokens = args.max_new_tokens or task.max_new_tokens

    def timed(batch_size: int) -> tuple[list[str], float]:
        started = time.perf_counter()
        outputs, _ = generate(loaded.model, loaded.tokenizer, examples, max_new_tokens, batch_size, args.max_seq_len)
        return outputs, time.perf_counter() - started

    generate(loaded.model, loaded.tokenizer, examples[:2], 2, 2, args.max_seq_len)  # warm-up
    batched, batched_seconds = timed(args.batch_size)
    console.log(f"batch {args.batch_size}: {len(examples) / batched_seconds:.2f} examples/s")
    single, single_seconds = timed(1)
    console.log(f"batch 1: {len(examples) / single_seconds:.2f} examples/s")

    identical = sum(a == b for a, b in zip(batched, single))
    speedup = single_seconds / batched_seconds
    console.print(f"{args.model} on {args.task} ({len(examples)} examples, {max_new_tokens} new tokens max): "
                  f"speedup {speedup:.2f}x (target >= {TARGET}), identical outputs {identical}/{len(examples)}")
    differing = [{"id": e.id, "batched": a, "single": b} for e, a, b in zip(examples, batched, single) if a != b]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "eval_throughput",
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"max_new_tokens": max_new_tokens},
        "examples_per_second": {"batched": len(examples) / batched_seconds, "single": len(examples) / single_seconds},
        "speedup": speedup, "target": TARGET, "identical": identical, "total": len(examples), "differing": differing,
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
