"""What the AdamDDS step-size estimate costs, and how many samples it needs.

1. Time per Hessian-vector product on one training batch, in alternating rounds (median reported):
   forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), double backward with the gradient graph built
   for that one product, and double backward reusing a built graph (what power iteration does after its first
   product); next to one training step (forward, backward, Adam step) on the same batch.
2. One estimate (default preset: batches of 16, power iteration to rtol 1e-3 with warm starts, max over batches,
   T = the run's steps) on the largest sample. The estimates for the smaller samples are its prefixes
   (``StepsizeEstimate.subsample``), which is exactly what ``estimate_stepsize`` returns for those sample sizes
   (the sample is one seeded permutation and warm starts only look back); this is checked against a direct run
   on the smallest sample. For each size: alpha and its bootstrap interval (max and mean aggregates), the gap to
   the largest-sample estimate, and the cost in training steps and as a share of a --run-steps run.

    python benchmarks/stepsize_cost.py                         # minilm + LoRA r=16 on AG News, 8-10 minutes
    python benchmarks/stepsize_cost.py --samples 16 64 --rounds 2   # a quick look

Targets: forward-over-reverse >= 1.5x faster than double backward; an estimate within 10% of the largest-sample
one from <= 256 samples, costing <= 2% of a 3125-step run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from adamlab.encoding import encode_causal, encode_classifier
from adamlab.models import LoraSettings, apply_lora, load_model
from adamlab.stepsize.hvp import HessianVectorProduct, trainable_parameters
from adamlab.stepsize.spectral import random_unit_vector, seeded_generator
from adamlab.tasks import get_task
from adamlab.training import estimate_for_training
from adamlab.training.losses import training_loss

JVP_SPEEDUP_TARGET = 1.5
SAMPLE_TARGET, GAP_TARGET, COST_TARGET = 256, 0.10, 0.02

console = Console(width=140)


def product_seconds(model, loss_fn, batch, rounds: int) -> dict[str, list[float]]:
    """Seconds per Hessian-vector product by each engine and per training step, one of each per round."""
    params = [p for _, p in trainable_parameters(model)]
    vector = random_unit_vector(params, seeded_generator(0, "benchmark"))

    def loss():
        return loss_fn(model, batch)

    def jvp_of_grad():
        product = HessianVectorProduct(loss, params, model=model, engine="jvp")
        started = time.perf_counter()
        product(vector)
        return time.perf_counter() - started

    def double_backward_rebuilt():
        started = time.perf_counter()
        HessianVectorProduct(loss, params, engine="double_backward")(vector)
        return time.perf_counter() - started

    def double_backward_reused():
        # Built untimed in each round: the training step's in-place update invalidates an older graph.
        reused = HessianVectorProduct(loss, params, engine="double_backward")
        started = time.perf_counter()
        reused(vector)
        return time.perf_counter() - started

    optimizer = torch.optim.Adam(params, lr=1e-6)
    start = [p.detach().clone() for p in params]

    def train_step():
        model.train()
        started = time.perf_counter()
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        model.eval()
        return seconds

    timers = {"jvp_of_grad": jvp_of_grad, "double_backward_rebuilt": double_backward_rebuilt,
              "double_backward_reused": double_backward_reused, "train_step": train_step}
    model.eval()
    probe = HessianVectorProduct(loss, params, model=model, engine="jvp")
    probe(vector)
    if probe.engine != "jvp":  # an operator without forward-mode support: only double backward is timed
        console.print(f"forward-over-reverse falls back to double backward here: {probe.fallback_reason}")
        del timers["jvp_of_grad"]
    for timer in timers.values():  # warm-up: first calls pay for lazy initialisation
        timer()
    seconds = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            seconds[name].append(timer())
    with torch.no_grad():
        for p, value in zip(params, start):
            p.copy_(value)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="ag_news")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--run-steps", type=int, default=3125, help="the planned run: T, and the cost's yardstick")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "stepsize_cost.json")
    args = parser.parse_args()
    samples = sorted(args.samples)

    task = get_task(args.task)
    torch.manual_seed(args.seed)  # LoRA's initialisation, as the trainer seeds it
    loaded = load_model(args.model, num_labels=len(task.answer_choices) or None, seed=args.seed)
    loaded = apply_lora(loaded, LoraSettings(r=args.lora_r))
    encode = encode_classifier if loaded.head == "classifier" else encode_causal
    encoded = [encode(loaded.tokenizer, e, args.max_seq_len) for e in task.load("train")]
    if len(encoded) < samples[-1]:
        raise SystemExit(f"{args.task} has {len(encoded)} training examples, fewer than {samples[-1]}")
    model, pad_id = loaded.model, loaded.tokenizer.pad_token_id
    loss_fn = training_loss(loaded.head, pad_id, torch.device("cpu"))

    console.print(f"[bold]1. time per HVP[/] ({args.model}, LoRA r={args.lora_r}, batch {args.batch_size}, "
                  f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds)")
    seconds = product_seconds(model, loss_fn, encoded[: args.batch_size], args.rounds)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    step = median["train_step"]

    console.print(f"[bold]2. estimate on {samples[-1]} samples[/] (prefixes give the smaller sample sizes)")
    options = dict(batch_size=args.batch_size, total_steps=args.run_steps, seed=args.seed)
    full = estimate_for_training(model, loaded.head, encoded, pad_id, samples=samples[-1], **options)
    direct = estimate_for_training(model, loaded.head, encoded, pad_id, samples=samples[0], **options)
    prefix_exact = direct.records["s"] == full.subsample(samples[0]).records["s"] and direct.alpha == full.subsample(
        samples[0]).alpha
    by_mean = dataclasses.replace(full, aggregate="mean")
    largest_by_mean = by_mean.subsample(samples[-1])

    rows = []
    for n in samples:
        estimate, mean_estimate = full.subsample(n), by_mean.subsample(n)
        rows.append({
            "samples": n,
            "alpha": float(estimate.alpha), "alpha_interval": estimate.alpha_interval, "K": estimate.K,
            "L0": estimate.L0, "gap_to_largest": estimate.alpha / full.alpha - 1,
            "alpha_mean_aggregate": float(mean_estimate.alpha), "alpha_interval_mean_aggregate":
                mean_estimate.alpha_interval, "gap_to_largest_mean_aggregate": mean_estimate.alpha / largest_by_mean.alpha - 1,
            "hvps": estimate.hvp_count, "seconds": estimate.wall_time_s, "train_steps": estimate.wall_time_s / step,
            "share_of_run": estimate.wall_time_s / (step * args.run_steps),
            "converged_fraction": estimate.converged_fraction,
        })

    jvp_supported = "jvp_of_grad" in median
    jvp_speedup = median["double_backward_rebuilt"] / median["jvp_of_grad"] if jvp_supported else None
    cheap_enough = [r for r in rows if r["samples"] <= SAMPLE_TARGET and abs(r["gap_to_largest"]) <= GAP_TARGET
                    and r["share_of_run"] <= COST_TARGET]
    result = {
        "benchmark": "stepsize_cost",
        "config": vars(args) | {"json": str(args.json)},
        "torch_threads": torch.get_num_threads(),
        "hvp_seconds_median": median,
        "hvp_seconds": seconds,
        "jvp_supported": jvp_supported,
        "jvp_speedup_over_double_backward_rebuilt": jvp_speedup,
        "jvp_speedup_over_double_backward_reused":
            median["double_backward_reused"] / median["jvp_of_grad"] if jvp_supported else None,
        "hvp_engine_used_by_estimate": full.hvp_engine,
        "estimate": {"K": full.K, "L0": full.L0, "alpha": float(full.alpha), "T": full.T,
                     "iterations": full.iterations_histogram, "converged_fraction": full.converged_fraction},
        "prefix_equals_direct_estimate": prefix_exact,
        "by_samples": rows,
        "targets": {
            "jvp_speedup": {"target": JVP_SPEEDUP_TARGET, "value": jvp_speedup,
                            "met": jvp_supported and jvp_speedup >= JVP_SPEEDUP_TARGET},
            "within_10pct_from_256_at_2pct_cost": {"met": bool(cheap_enough),
                                                    "samples": [r["samples"] for r in cheap_enough]},
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))

    table = Table(title="seconds per product (median)", title_justify="left")
    for column in ("jvp of grad", "double backward, graph per product", "double backward, graph reused",
                   "training step", "jvp speed-up"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{median[k]:.3f}" if k in median else "unsupported"
                    for k in ("jvp_of_grad", "double_backward_rebuilt", "double_backward_reused", "train_step")),
                  f"{jvp_speedup:.2f}x" if jvp_supported else "-")
    console.print(table)
    table = Table(title=f"alpha by sample size (T = {args.run_steps}); gaps to the {samples[-1]}-sample estimate",
                  title_justify="left")
    for column in ("samples", "alpha (max)", "95% interval", "gap", "alpha (mean)", "gap (mean)", "HVPs",
                   "train steps", "% of run"):
        table.add_column(column, justify="right")
    for r in rows:
        interval = "[{:.3e}, {:.3e}]".format(*r["alpha_interval"]) if r["alpha_interval"] else "none (1 batch)"
        table.add_row(str(r["samples"]), f"{r['alpha']:.4e}", interval,
                      f"{r['gap_to_largest']:+.1%}", f"{r['alpha_mean_aggregate']:.4e}",
                      f"{r['gap_to_largest_mean_aggregate']:+.1%}", str(r["hvps"]), f"{r['train_steps']:.1f}",
                      f"{r['share_of_run']:.2%}")
    console.print(table)
    console.print(f"prefix = direct estimate: {prefix_exact}; results in {args.json}")


if __name__ == "__main__":
    main()
