"""Training throughput of `adamlab train` against a bare torch + peft loop on the same model, data and optimizer.

Both fine-tune the same LoRA model on the same batches (same tokenisation, padding and AdamW); the bare loop has
none of adamlab's bookkeeping (token-normalised loss, gradient and update norms, per-step JSONL and memory
records, checkpoint-ready state). Rounds alternate between the two; reported: median samples/s per step and the
ratio. Writes JSON.

    python benchmarks/train_throughput.py                    # minilm on AG News
    python benchmarks/train_throughput.py --model smollm2-135m --max-seq-len 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from adamlab.encoding import encode_causal, encode_classifier
from adamlab.models import LoraSettings, apply_lora, load_model
from adamlab.tasks import get_task
from adamlab.training import TrainConfig, train
from adamlab.training.order import ExampleOrder

from bare_loop import bare_step_seconds  # benchmarks/bare_loop.py, next to this script

TARGET = 0.95


def bare_loop_step_seconds(args: argparse.Namespace) -> list[float]:
    """The loop a user would write: model(**batch, labels) -> loss.backward() -> AdamW.step()."""
    torch.manual_seed(args.seed)
    task = get_task(args.task)
    loaded = apply_lora(load_model(args.model, num_labels=len(task.answer_choices)), LoraSettings(r=args.lora_r))
    model, tokenizer = loaded.model, loaded.tokenizer
    examples = task.load("train", limit=args.steps * args.batch_size)
    encode = encode_classifier if loaded.head == "classifier" else encode_causal
    encoded = [encode(tokenizer, e, args.max_seq_len) for e in examples]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    order = ExampleOrder(len(encoded), args.batch_size, args.seed)
    return bare_step_seconds(model, encoded, tokenizer.pad_token_id, optimizer, order, args.steps)


def adamlab_step_seconds(args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(model=args.model, task=args.task, out=out, optimizer="adamw", lr=1e-4, steps=args.steps,
                             batch_size=args.batch_size, seed=args.seed, max_seq_len=args.max_seq_len,
                             lora=LoraSettings(r=args.lora_r), train_limit=args.steps * args.batch_size, eval_limit=1,
                             checkpoint_every=0)
        train(config, show_progress=False)
        return [json.loads(line)["step_seconds"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="ag_news")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = parser.parse_args()

    console = Console()
    samples = {"bare torch + peft": [], "adamlab train": []}
    for round_ in range(args.rounds):
        for label, run in (("bare torch + peft", bare_loop_step_seconds), ("adamlab train", adamlab_step_seconds)):
            seconds = run(args)[1:]  # the first step pays one-off allocation costs in both
            samples[label] += seconds
            console.log(f"round {round_ + 1}: {label} {args.batch_size / statistics.median(seconds):.1f} samples/s")
    throughput = {label: args.batch_size / statistics.median(s) for label, s in samples.items()}
    ratio = throughput["adamlab train"] / throughput["bare torch + peft"]
    console.print(f"{args.model} on {args.task}: adamlab {throughput['adamlab train']:.1f} samples/s, bare loop "
                  f"{throughput['bare torch + peft']:.1f} samples/s, ratio {ratio:.3f} (target >= {TARGET})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "train_throughput",
                                     "config": {k: v for k, v in vars(args).items() if k != "json"},
                                     "samples_per_second": throughput, "ratio": ratio, "target": TARGET,
                                     "torch_threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
