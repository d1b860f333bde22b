"""Sweep wall time by executor: the same study run one trial at a time in this process (``local``), in two local
worker processes (``local --workers 2``) and as Ray tasks on a local two-CPU Ray cluster (``ray``), each into a
fresh study folder, in one run. Reported: wall time, trials per minute, the ratio to the sequential sweep, and
how far each trial's final loss is from the sequential one, and whether its evaluation is the same. Writes JSON.

On a CPU machine the concurrent executors pay for their processes (spawn, imports, model load per trial) and split
the cores between trials; they pay off with several GPUs, or a Ray cluster of several machines.

    python benchmarks/sweep_executors.py                      # tiny-llama, 8 trials of 30 steps
    python benchmarks/sweep_executors.py --model minilm --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from adamlab.studies import Store, sweep

SPEC = """\
name: executors
description: the executor benchmark's study
budget: {{search_space: fixed, trials_per_arm: 1}}
models: [{model}]
tasks: [ag_news]
seeds: [0, 1]
steps: {steps}
batch_size: 8
max_seq_len: 96
lora: {{r: 4, alpha: 8}}
train: {{limit: 256, checkpoint_every: 1000}}
eval: {{limit: 32, batch_size: 32}}
lr: 1e-3
arms:
  - {{name: adamw, optimizer: adamw}}
  - {{name: adam, optimizer: adam}}
  - {{name: lion, optimizer: lion, lr: 1e-4}}
  - {{name: yogi, optimizer: yogi}}
"""


def run(spec: Path, folder: Path, executor: str, workers: int | None) -> tuple[float, dict]:
    started = time.perf_counter()
    result = sweep(spec, folder, executor=executor, workers=workers)
    seconds = time.perf_counter() - started
    assert result.completed and result.counts["done"] == sum(result.counts.values()), result.counts
    store = Store.open(folder)
    try:
        finals = {key: (store.final_losses()[key], evaluation) for key, evaluation in store.final_evaluations().items()}
    finally:
        store.close()
    return seconds, finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/sweep_executors.json")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cores = os.cpu_count()
    runs = [("local", None), ("local", 2), ("ray", 2)]
    with tempfile.TemporaryDirectory() as scratch:
        spec = Path(scratch) / "executors.yaml"
        spec.write_text(SPEC.format(model=args.model, steps=args.steps))
        rows, reference = [], None
        for executor, workers in runs:
            if executor == "ray":
                import ray

                ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
            try:
                seconds, finals = run(spec, Path(scratch) / f"{executor}-{workers}", executor, workers)
            finally:
                if executor == "ray":
                    ray.shutdown()
            reference = reference or finals
            rows.append({"executor": executor, "workers": workers or 1, "seconds": seconds,
                         "trials_per_minute": 60 * len(finals) / seconds,
                         # Workers get a share of the threads, so sums may round differently: compare, don't expect bits.
                         "max_final_loss_difference": max(abs(finals[k][0] - reference[k][0]) for k in finals),
                         "same_evaluations": all(finals[k][1] == reference[k][1] for k in finals)})
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio_to_sequential"] = row["seconds"] / base
        print(f"{row['executor']:>5} x{row['workers']}: {row['seconds']:6.1f} s, "
                      f"{row['trials_per_minute']:5.2f} trials/min, {row['ratio_to_sequential']:.2f}x the sequential "
                      f"time; final losses within {row['max_final_loss_difference']:.1e}, same evaluations: "
                      f"{row['same_evaluations']}")
    record = {"model": args.model, "steps": args.steps, "trials": len(reference), "cpu_cores": cores,
              "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "runs": rows}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
