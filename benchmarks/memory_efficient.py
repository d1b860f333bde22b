"""Optimizer state and peak memory for full fine-tuning of a Llama-shaped model, with step time beside it.

Each optimizer runs in a fresh process (peak RSS is per process) that builds the same randomly initialised Llama
(8 layers, hidden 512, intermediate 1376, vocabulary 8192; fp32, CPU), builds the optimizer through
``create_optimizer(name, model)`` (so Adam-mini partitions by parameter name and LDAdam puts the attention/MLP
matrices in low-rank groups), and runs forward + backward + step on a fixed batch. Reported: optimizer-state bytes
(all, and for LDAdam's low-rank matrices against AdamW's state for the same matrices), peak RSS, its increase over
the model alone, and the median step time. Writes JSON.

    python benchmarks/memory_efficient.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

CONFIGS = {
    "adamw": {},
    "adam_mini": {},
    "ldadam": {"rank": 16},
    "ldadam (EF in grad, official)": {"rank": 16, "ef_storage": "grad"},
    "adafactor": {},
    "came": {},
    "lion": {},
    "adamw_8bit": {},
}
TARGETS = {"adam_mini": ("state vs AdamW", 0.51), "ldadam": ("low-rank state vs AdamW", 0.05)}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(label: str, args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from adamlab.optim import create_optimizer, optimizer_state_bytes

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config)
    tokens = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len))

    def forward_backward():
        model(input_ids=tokens, labels=tokens).loss.backward()

    forward_backward()  # gradients exist before the optimizer, as in training: the baseline includes them
    baseline = peak_rss()
    name = label.split(" ")[0]
    optimizer = create_optimizer(name, model, lr=1e-4, **CONFIGS[label])
    seconds = []
    for _ in range(args.steps):
        started = time.perf_counter()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
        optimizer.zero_grad(set_to_none=False)
        forward_backward()
    low_rank = [p for g in optimizer.param_groups if g.get("enable_lowrank") for p in g["params"]]
    low_rank_state = sum(t.nbytes for p in low_rank for t in optimizer.state[p].values() if torch.is_tensor(t))
    return {
        "optimizer": label,
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_bytes": optimizer_state_bytes(optimizer),
        "low_rank_params": sum(p.numel() for p in low_rank),
        "low_rank_state_bytes": low_rank_state,
        "peak_rss_bytes": peak_rss(),
        "model_and_grads_rss_bytes": baseline,
        "seconds_per_step": statistics.median(seconds[1:]),  # the first step creates the state
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "memory_efficient.json")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    console = Console()
    rows = []
    for label in CONFIGS:
        console.log(f"running {label}")
        command = [sys.executable, __file__, "--worker", label, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    adamw = rows[0]
    table = Table(title="full fine-tuning, Llama 8 x 512 (fp32, CPU)")
    for column in ("optimizer", "state MiB", "x AdamW state", "low-rank state x AdamW", "peak RSS MiB",
                   "peak over model+grads MiB", "ms/step"):
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for row in rows:
        row["state_ratio_to_adamw"] = row["state_bytes"] / adamw["state_bytes"]
        # AdamW keeps two moments per element: 8 bytes of fp32 state per parameter element.
        adamw_low_rank = 2 * 4 * row["low_rank_params"]
        row["low_rank_state_ratio"] = row["low_rank_state_bytes"] / adamw_low_rank if adamw_low_rank else None
        table.add_row(
            row["optimizer"], f"{row['state_bytes'] / 2**20:.1f}", f"{row['state_ratio_to_adamw']:.3f}",
            "" if row["low_rank_state_ratio"] is None else f"{row['low_rank_state_ratio']:.3f}",
            f"{row['peak_rss_bytes'] / 2**20:.0f}",
            f"{(row['peak_rss_bytes'] - row['model_and_grads_rss_bytes']) / 2**20:.0f}",
            f"{1e3 * row['seconds_per_step']:.1f}",
        )
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "memory_efficient", "config": vars(args) | {"json": None},
                                     "targets": TARGETS, "results": rows}, indent=2, default=str))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
