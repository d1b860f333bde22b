"""Optimizer step time and state memory on a Llama-shaped parameter set, side by side in one run.

Every optimizer in the registry is timed against ``torch.optim.AdamW(foreach=True)`` on identical parameters
and gradients, alternating the two in each round so machine noise hits both alike; adamlab's own optimizers are
also timed against the same algorithm in ``pytorch-optimizer`` and in the authors' package. Reported: median
seconds per step, the ratios, and optimizer-state bytes. Writes JSON.

    python benchmarks/optim_step.py                       # the BENCHMARKS.md table
    python benchmarks/optim_step.py --only lion adabelief --rounds 3
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from adamlab.optim import available_optimizers, create_optimizer, optimizer_state_bytes, registry

# Targets from the foundation issue: our foreach paths against AdamW-foreach, and against per-parameter peers.
MAX_RATIO_TO_ADAMW = {"lion": 1.0}
DEFAULT_MAX_RATIO_TO_ADAMW = 1.3
MIN_SPEEDUP_OVER_PEERS = 2.0


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS after every step. Otherwise each step's temporaries
    are fresh mmap pages whose page faults dominate and swing the timings (a tuned allocator such as jemalloc
    behaves like this too). Applies to every optimizer alike."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 2**30)
    libc.mallopt(m_mmap_threshold, 2**30)


def llama_shaped_params(layers: int, hidden: int, intermediate: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = []
    for _ in range(layers):
        shapes += [(hidden, hidden)] * 4 + [(intermediate, hidden)] * 2 + [(hidden, intermediate)] + [(hidden,)] * 2
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.02) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


def peers(name: str) -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    """The same algorithm in other packages, built with matching hyperparameters."""
    import pytorch_optimizer as po

    def authors(module: str, cls: str, **kw):
        return lambda params: getattr(__import__(module, fromlist=[cls]), cls)(params, lr=1e-3, **kw)

    table = {
        "adabelief": {
            "pytorch-optimizer": lambda ps: po.AdaBelief(ps, lr=1e-3, eps=1e-16, rectify=True),
            "adabelief-pytorch": authors("adabelief_pytorch", "AdaBelief", eps=1e-16, print_change_log=False),
        },
        "adabound": {
            "pytorch-optimizer": lambda ps: po.AdaBound(ps, lr=1e-3),
            "adabound": authors("adabound", "AdaBound"),
        },
        "yogi": {
            "pytorch-optimizer": lambda ps: po.Yogi(ps, lr=1e-3),
            "torch-optimizer": authors("torch_optimizer", "Yogi"),
        },
        "lion": {
            "pytorch-optimizer": lambda ps: po.Lion(ps, lr=1e-3),
            "lion-pytorch": authors("lion_pytorch", "Lion"),
        },
        "came": {
            "pytorch-optimizer": lambda ps: po.CAME(ps, lr=1e-3),
            "came-pytorch": authors("came_pytorch", "CAME"),
        },
        "lookahead": {
            "pytorch-optimizer": lambda ps: po.Lookahead(torch.optim.Adam(ps, lr=1e-3, foreach=True), k=5, alpha=0.5),
            "torch-optimizer": lambda ps: __import__("torch_optimizer").Lookahead(
                torch.optim.Adam(ps, lr=1e-3, foreach=True), k=5, alpha=0.5
            ),
        },
    }
    return table.get(name, {})


def build(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    hparams = {"lr": 1e-3}
    if name == "lookahead":
        hparams.update(base="adam", foreach=True, k=5, alpha=0.5)
    elif "foreach" in registry.accepted_hparams(registry.REGISTRY[name].resolve()) and name != "adamw_fused":
        hparams["foreach"] = True
    optimizer = create_optimizer(name, params, **hparams)
    if hasattr(optimizer, "train"):  # schedule-free
        optimizer.train()
    return optimizer


def time_side_by_side(
    builders: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]],
    args: argparse.Namespace,
    measure_state: set[str],
) -> dict[str, dict[str, float]]:
    """Median seconds per step of each builder's optimizer, measured in alternating rounds; state bytes for the
    labels in ``measure_state`` (some peers' ``state_dict`` does not work on current torch)."""
    runs = {}
    for label, make in builders.items():
        params = llama_shaped_params(args.layers, args.hidden, args.intermediate)
        optimizer = make(params)
        for _ in range(args.warmup):
            optimizer.step()
        runs[label] = (optimizer, [], optimizer_state_bytes(optimizer) if label in measure_state else None)
    for _ in range(args.rounds):
        for optimizer, samples, _ in runs.values():
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            samples.append((time.perf_counter() - start) / args.steps)
    result = {label: {"seconds_per_step": statistics.median(s), "state_bytes": b} for label, (_, s, b) in runs.items()}
    del runs
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="optimizer names (default: every available one)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "optim_step.json")
    args = parser.parse_args()
    keep_freed_memory()

    # Optimizers that build from a model (Adam-mini's name-based blocks, LDAdam's low-rank groups) are measured on
    # one by benchmarks/memory_efficient.py; on bare parameters they would degenerate to plain Adam.
    names = args.only or [n for n in available_optimizers() if n == "lookahead" or not registry.REGISTRY[n].from_model]
    baseline = "adamw (torch, foreach)"
    console = Console()
    table = Table(title=f"optimizer step, {args.layers} Llama layers at hidden {args.hidden}, fp32, CPU")
    for column in ("optimizer", "source", "ms/step", "x AdamW", "target", "state MiB", "x AdamW state", "peers: speedup"):
        table.add_column(column, justify="left" if column in ("optimizer", "source", "peers: speedup") else "right")

    rows = []
    for name in names:
        source = "adamlab" if name == "lookahead" else registry.REGISTRY[name].source
        builders = {
            name: lambda ps, name=name: build(name, ps),
            baseline: lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
            **peers(name),
        }
        console.log(f"timing {name} against {', '.join(list(builders)[1:])}")
        timed = time_side_by_side(builders, args, measure_state={name, baseline})
        ours, adamw = timed[name], timed[baseline]
        ratio = ours["seconds_per_step"] / adamw["seconds_per_step"]
        speedups = {peer: timed[peer]["seconds_per_step"] / ours["seconds_per_step"] for peer in peers(name)}
        target = MAX_RATIO_TO_ADAMW.get(name, DEFAULT_MAX_RATIO_TO_ADAMW) if source == "adamlab" else None
        row = {
            "optimizer": name,
            "source": source,
            "seconds_per_step": ours["seconds_per_step"],
            "adamw_seconds_per_step": adamw["seconds_per_step"],
            "ratio_to_adamw": ratio,
            "target_ratio_to_adamw": target,
            "meets_ratio_target": None if target is None else ratio <= target,
            "state_bytes": ours["state_bytes"],
            "adamw_state_bytes": adamw["state_bytes"],
            "peer_speedups": speedups,
            "meets_peer_target": None if not speedups else min(speedups.values()) >= MIN_SPEEDUP_OVER_PEERS,
        }
        rows.append(row)
        mark = "" if target is None else (" ok" if ratio <= target else " [red]MISS[/]")
        table.add_row(
            name,
            source,
            f"{1e3 * ours['seconds_per_step']:.1f}",
            f"{ratio:.2f}{mark}",
            "" if target is None else f"<= {target}",
            f"{ours['state_bytes'] / 2**20:.1f}",
            f"{ours['state_bytes'] / adamw['state_bytes']:.2f}",
            ", ".join(f"{peer} {s:.1f}x" for peer, s in speedups.items()),
        )
    console.print(table)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in llama_shaped_params(args.layers, args.hidden, args.intermediate))
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "optim_step",
                "config": {k: v for k, v in vars(args).items() if k != "json"} | {"parameters": n_params},
                "environment": {
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "threads": torch.get_num_threads(),
                },
                "results": rows,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
