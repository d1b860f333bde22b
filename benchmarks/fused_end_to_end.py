"""What the fused optimizer step buys a whole training step: `adamlab train` on a full fine-tune of the 8 x 512
Llama (every parameter trained, no LoRA), with the fused step on and off, against what the optimizer step alone
predicts.

Per optimizer, in one process:

1. The step alone: the model's own parameters (``llama-60m``: 8 layers, hidden 512, intermediate 1376; byte-level
   tokenizer, so the embeddings are small and the 25M matrix parameters dominate as in ``optim_step.py``), random
   gradients, ``create_optimizer(name, model)`` with ``fused=True`` and with its default path, alternated; the
   median step-time difference is the saving the fused path should bring to every training step.
2. The training step: ``adamlab train`` (``train(TrainConfig(...))``) on the bundled C4 sample, ``lora=None``,
   ``--fused-optimizer`` and ``--no-fused-optimizer`` alternated over rounds; each run's first steps (compile and
   warm-up) are dropped and the median of the rest is its step time.

Reported: the step's share of a training step (saving / unfused training step), the predicted training step with
the fused path (unfused minus the saving), the measured one, and the measured speed-up against the predicted one.
The issue's target: training improves by the step's share, i.e. measured speed-up ~= predicted. Writes JSON.

    python benchmarks/fused_end_to_end.py                          # every optimizer with a fused path
    python benchmarks/fused_end_to_end.py --only lion adabelief --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from adamlab.models import scratch_model
from adamlab.optim import create_optimizer
from adamlab.training import TrainConfig, train

from optim_step import FUSED_OPTIMIZERS  # benchmarks/optim_step.py, next to this script

MODEL = "llama-60m"
TOKENIZER = "byte-level"
HPARAMS = {"ldadam": {"rank": 16}}  # LDAdam's benchmark rank, as in optim_step.py and memory_efficient.py


def step_alone_seconds(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of ``optimizer.step()`` on the model's parameters, fused and default path alternated."""
    model, _ = scratch_model(MODEL, TOKENIZER)
    generator = torch.Generator().manual_seed(0)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-3
    optimizers = {path: create_optimizer(name, model, lr=1e-4, **HPARAMS.get(name, {}),
                                         **({"fused": True} if path == "fused" else {}))
                  for path in ("default", "fused")}
    times: dict[str, list[float]] = {path: [] for path in optimizers}
    for path, optimizer in optimizers.items():
        for _ in range(args.warmup):  # the fused path compiles here; both fill their state
            optimizer.step()
    for _ in range(args.step_repeats):
        for path, optimizer in optimizers.items():
            started = time.perf_counter()
            optimizer.step()
            times[path].append(time.perf_counter() - started)
    return {path: statistics.median(seconds) for path, seconds in times.items()}


def training_step_seconds(name: str, fused: bool, args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(model=MODEL, tokenizer=TOKENIZER, task="c4", out=out, optimizer=name, lr=1e-4,
                             optimizer_args=HPARAMS.get(name, {}), steps=args.steps, batch_size=args.batch_size,
                             max_seq_len=args.max_seq_len, lora=None, fused_optimizer=fused, seed=0,
                             eval_limit=1, checkpoint_every=0)
        train(config, show_progress=False)
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["step_seconds"] for line in lines][args.warmup:]


def measure(name: str, args: argparse.Namespace, console: Console) -> dict:
    alone = step_alone_seconds(name, args)
    samples: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for fused in ((False, True) if round_ % 2 == 0 else (True, False)):
            samples[fused] += training_step_seconds(name, fused, args)
    unfused, fused = statistics.median(samples[False]), statistics.median(samples[True])
    saving = alone["default"] - alone["fused"]
    predicted = unfused - saving
    row = {"optimizer": name, "step_alone_seconds": alone, "step_saving_seconds": saving,
           "step_share": saving / unfused, "training_step_seconds": {"unfused": unfused, "fused": fused},
           "predicted_fused_training_step_seconds": predicted,
           "speedup_measured": unfused / fused, "speedup_predicted": unfused / predicted,
           "samples": {"unfused": samples[False], "fused": samples[True]}}
    console.log(f"{name}: step alone {1e3 * alone['default']:.1f} -> {1e3 * alone['fused']:.1f} ms; training step "
                f"{1e3 * unfused:.0f} -> {1e3 * fused:.0f} ms (predicted {1e3 * predicted:.0f}); speed-up "
                f"{row['speedup_measured']:.3f} measured, {row['speedup_predicted']:.3f} predicted")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=FUSED_OPTIMIZERS, default=list(FUSED_OPTIMIZERS))
    parser.add_argument("--steps", type=int, default=10, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped from each run (compile, allocation)")
    parser.add_argument("--rounds", type=int, default=2, help="unfused/fused run pairs per optimizer, alternated")
    parser.add_argument("--step-repeats", type=int, default=20, help="timed optimizer steps alone, per path")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "fused_end_to_end.json")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")

    console = Console()
    warnings.simplefilter("ignore", UserWarning)  # transformers' notices on a from-config model
    rows = [measure(name, args, console) for name in args.only]
    table = Table(title=f"adamlab train, full fine-tune of {MODEL} ({args.batch_size} x {args.max_seq_len} tokens)")
    for column in ("optimizer", "step alone ms (default -> fused)", "share of a training step",
                   "training step ms (unfused -> fused)", "speed-up measured", "speed-up predicted"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["optimizer"], f"{1e3 * r['step_alone_seconds']['default']:.1f} -> "
                                      f"{1e3 * r['step_alone_seconds']['fused']:.1f}",
                      f"{100 * r['step_share']:.1f}%",
                      f"{1e3 * r['training_step_seconds']['unfused']:.0f} -> "
                      f"{1e3 * r['training_step_seconds']['fused']:.0f}",
                      f"{r['speedup_measured']:.3f}", f"{r['speedup_predicted']:.3f}")
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "fused_end_to_end", "model": MODEL, "tokenizer": TOKENIZER,
                                     "config": {k: v for k, v in vars(args).items() if k != "json"},
                                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                                     "machine": platform.processor() or platform.machine(), "rows": rows},
                                    indent=2))
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
