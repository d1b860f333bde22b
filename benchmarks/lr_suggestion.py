"""Does a learning-rate suggestion hold? Each method's lr against the grid-best constant lr, on real CPU workloads.

Per workload (model x task x fine-tuning mode, fixed steps, batch size and evaluation):

1. ``grid``: full runs of Adam (constant lr) and AdamW + cosine on a log grid with factor sqrt(10), to the end of the
   run (no early stopping); a grid whose best point is on an edge is extended by one point on that side (three times at
   most) so the optimum is bracketed; the starting grids are three points around where
   the optimum of each kind of run is expected, because the CPU affords no more.
2. ``methods``: every learning-rate method of ``adamlab.stepsize.suggest`` from the run's own w0 and training data
   (the same seed, so the same LoRA initialisation), its cost in seconds, and a full Adam run at the suggested lr.

Reported per workload and method: the lr, its ratio to the grid-best lr, the metric at the suggested lr, the regret
(grid-best metric minus it, in points of accuracy; for a language model scored by perplexity, lower being better,
the percent by which it is worse than the grid's best), and the cost as a share of one training run. Every run's
result is cached in its run folder (``result.json``), so an interrupted benchmark resumes where it stopped.

    nice python benchmarks/lr_suggestion.py --phase grid       # the grid (the long part; start it first)
    nice python benchmarks/lr_suggestion.py --phase methods    # the suggestions, each trained once
    python benchmarks/lr_suggestion.py --phase table           # the table from what is cached
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adamlab.models import LoraSettings
from adamlab.optim import create_optimizer
from adamlab.stepsize.suggest import SUGGEST_FRACTION, SUGGESTION_METHODS, LRSuggestion, MethodSettings, suggest_lr
from adamlab.training.config import TrainConfig
from adamlab.training.loop import train
from adamlab.training.losses import loss_targets, training_loss
from adamlab.training.setup import prepare_trial

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "lr_suggestion"
RESULTS = Path(__file__).parent / "results" / "lr_suggestion.json"
MAX_EXTENSIONS = 3
ARMS = {"adam": ("adam", "constant"), "adamw_cosine": ("adamw", "cosine")}
# Methods measured once each; the others follow from the same measurement at the same cost.
MEASURED = ("aeos", "range-test", "dds", "dds-warm")
DERIVED = {"suggest": "aeos", "dds-one": "dds", "range-test-min10": "range-test"}
LONG_RUN = 3125  # steps of the AdamDDS paper's runs: the cost share a real fine-tune would see
# where SUGGEST_FRACTION was set (the geometric mean of their grid-best lr / eta_max); the others validate it
CALIBRATION = {"minilm-lora-ag_news", "minilm-lora-sst2", "minilm-full-ag_news"}


@dataclass
class Workload:
    name: str
    model: str
    task: str
    lora: LoraSettings | None
    grid: tuple[int, ...]  # the starting grid in half-decades (lr = 10^(k/2)), around the expected optimum
    steps: int = 100
    batch_size: int = 16
    max_seq_len: int = 64
    eval_limit: int = 300
    metric: str = "accuracy"
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, optimizer: str, schedule: str, lr: float, out: Path) -> TrainConfig:
        return TrainConfig(model=self.model, task=self.task, out=str(out), optimizer=optimizer, lr=lr,
                           schedule=schedule, steps=self.steps, batch_size=self.batch_size, seed=0, lora=self.lora,
                           max_seq_len=self.max_seq_len, eval_limit=self.eval_limit, checkpoint_every=0, **self.extra)


def grid_lr(half_decades: int) -> float:
    """Grid point 10^(k/2), to four significant digits: the same point always names (and resumes) the same run."""
    return float(f"{10 ** (half_decades / 2):.3e}")


LORA_R8 = LoraSettings(r=8, alpha=16, dropout=0.05)
WORKLOADS = {
    w.name: w
    for w in (
        Workload("minilm-lora-ag_news", "minilm", "ag_news", LORA_R8, (-7, -6, -5)),
        Workload("minilm-lora-sst2", "minilm", "sst2", LORA_R8, (-7, -6, -5), steps=50, eval_limit=200),
        Workload("minilm-full-ag_news", "minilm", "ag_news", None, (-9, -8, -7), steps=40, eval_limit=200),
        Workload("smollm2-lora-sst2", "smollm2-135m", "sst2", LORA_R8, (-8, -7, -6), steps=20, batch_size=8,
                 max_seq_len=96, eval_limit=150, extra={"eval_mode": "score"}),
        # the same runs scored on all 872 SST-2 validation examples: on 150, the grid was flat within the noise
        Workload("smollm2-lora-sst2-eval872", "smollm2-135m", "sst2", LORA_R8, (-8, -7, -6), steps=20, batch_size=8,
                 max_seq_len=96, eval_limit=872, extra={"eval_mode": "score"}),
        Workload("minilm-full-sst2", "minilm", "sst2", None, (-9, -8, -7), steps=40, eval_limit=200),
        # pre-training from scratch: the 4 x 128 Llama with the byte-level tokenizer on the bundled C4 sample
        Workload("llama-tiny-scratch-c4", "llama-tiny", "c4", None, (-7, -6, -5), steps=200, max_seq_len=128,
                 eval_limit=100, metric="perplexity", higher_is_better=False),
    )
}


def lr_label(lr: float) -> str:
    return f"{lr:.3e}"


def run(workload: Workload, arm: str, lr: float, tag: str = "grid") -> dict[str, Any]:
    """One full training run (cached in its folder): status, metric, wall seconds."""
    optimizer, schedule = ARMS[arm]
    out = RUNS / workload.name / tag / arm / lr_label(lr)
    started = time.perf_counter()
    result = train(workload.config(optimizer, schedule, lr, out), show_progress=False)
    record = result.record
    metric = record.metrics.get(workload.metric, float("nan")) if result.status == "done" else float("nan")
    print(f"{workload.name} {tag} {arm} lr={lr:.3g}: {result.status} {workload.metric}={metric:.4f} "
          f"({record.wall_seconds:.0f}s train, {time.perf_counter() - started:.0f}s here)", flush=True)
    return {"lr": lr, "status": result.status, "metric": metric, "wall_seconds": record.wall_seconds}


def grid_search(workload: Workload, arm: str) -> list[dict[str, Any]]:
    """The grid, extended past an edge that holds the best point, until the best point is interior."""
    points = list(workload.grid)
    results = {k: run(workload, arm, grid_lr(k)) for k in points}
    for _ in range(MAX_EXTENSIONS):
        best = max(points, key=lambda k: _score(workload, results[k]))
        if best not in (points[0], points[-1]):
            break
        new = best - 1 if best == points[0] else best + 1
        results[new] = run(workload, arm, grid_lr(new))
        points = sorted(results)
    return [results[k] for k in points]


def _score(workload: Workload, result: dict[str, Any]) -> float:
    """The grid's ranking key, higher better: a diverged or failed run ranks below every finished one."""
    if not math.isfinite(result["metric"]):
        return -math.inf
    return result["metric"] if workload.higher_is_better else -result["metric"]


def regret(workload: Workload, best: float, metric: float) -> float:
    """Points of accuracy lost, or percent of perplexity added, against the grid's best."""
    return 100 * (best - metric) if workload.higher_is_better else 100 * (metric - best) / best


def measure_methods(workload: Workload, methods: tuple[str, ...] = MEASURED) -> dict[str, LRSuggestion]:
    """Each method's suggestion for Adam on the workload's w0 (the run's own seed, LoRA initialisation and
    training data), each cached in a JSON record; with ``methods=()`` only those already measured."""
    folder = RUNS / workload.name / "methods"
    folder.mkdir(parents=True, exist_ok=True)
    config = workload.config("adam", "constant", 1e-3, folder / "unused")
    inputs = None
    measured = {}
    for method in MEASURED:
        path = folder / f"{method}.json"
        if not path.exists() and method not in methods:
            continue
        if not path.exists():
            if inputs is None:
                inputs = prepare_trial(config)
            loaded = inputs.loaded
            loss_fn = training_loss(loaded.head, loaded.tokenizer.pad_token_id, torch.device("cpu"))
            suggestion = suggest_lr(method, loaded.model, loss_fn, inputs.encoded, _adam, optimizer="adam",
                                    horizon=workload.steps, settings=MethodSettings(batch_size=workload.batch_size),
                                    targets_fn=loss_targets)
            suggestion.save(path)
            print(f"{workload.name} {method}: lr {suggestion.lr:.3g} in {suggestion.cost_seconds:.0f}s", flush=True)
        measured[method] = LRSuggestion.load(path)
    suggestions = dict(measured)
    for method, source in DERIVED.items():
        if source in measured:
            suggestions[method] = derived(method, measured[source])
    return suggestions


def derived(method: str, source: LRSuggestion) -> LRSuggestion:
    """The methods that are another method's measurement read differently (same cost)."""
    diagnostics = dict(source.diagnostics)
    if method == "suggest":
        lr = MethodSettings().fraction * diagnostics["eta_max"]
    elif method == "dds-one":
        lr = source.lr * math.sqrt(source.horizon)
    else:
        lr = diagnostics["lr_at_min_loss"] / 10
    return LRSuggestion(method, source.optimizer, lr, source.horizon, source.batch_size, source.cost_seconds,
                        diagnostics)


def _adam(params, lr):
    return create_optimizer("adam", params, lr=lr)


def summarise(workload: Workload) -> dict[str, Any] | None:
    """The workload's row group: grid-best per arm, then per method the lr, ratio, metric, regret and cost."""
    grids = {}
    for arm in ARMS:
        folder = RUNS / workload.name / "grid" / arm
        results = [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))] if folder.exists() else []
        grids[arm] = sorted(({"lr": r["config"]["lr"], "status": r["status"],
                              "metric": r["metrics"].get(workload.metric, float("nan")),
                              "wall_seconds": r["wall_seconds"]} for r in results), key=lambda r: r["lr"])
    if not grids["adam"]:
        return None
    best = max(grids["adam"], key=lambda r: _score(workload, r))
    methods = {}
    if (RUNS / workload.name / "methods").exists():
        for method, suggestion in measure_methods(workload, methods=()).items():
            trained = RUNS / workload.name / "suggested" / "adam" / lr_label(suggestion.lr) / "result.json"
            run_seconds = best["wall_seconds"]
            row = {"lr": suggestion.lr, "ratio": suggestion.lr / best["lr"], "cost_seconds": suggestion.cost_seconds,
                   "cost_share": suggestion.cost_seconds / run_seconds,
                   "cost_share_3125": suggestion.cost_seconds / (run_seconds * LONG_RUN / workload.steps),
                   "metric": None, "regret": None, "trained": trained.exists(),
                   "nearest_grid": _nearest(grids["adam"], suggestion.lr)}
            if method == "suggest":
                row["fraction"] = SUGGEST_FRACTION
            if trained.exists():
                record = json.loads(trained.read_text())
                metric = record["metrics"].get(workload.metric, float("nan"))
                row.update(metric=metric, status=record["status"], regret=regret(workload, best["metric"], metric))
            methods[method] = row
    return {"workload": workload.name, "steps": workload.steps, "batch_size": workload.batch_size,
            "metric": workload.metric, "higher_is_better": workload.higher_is_better,
            "calibration": workload.name in CALIBRATION, "grid": grids,
            "grid_best": {arm: max(g, key=lambda r: _score(workload, r)) if g else None for arm, g in grids.items()},
            "methods": methods}


def _nearest(grid: list[dict[str, Any]], lr: float) -> dict[str, Any] | None:
    """The grid run within half a grid step (a factor 10^(1/4)) of ``lr`` in log scale, if there is one."""
    close = [r for r in grid if abs(math.log10(r["lr"] / lr)) <= 0.25]
    return min(close, key=lambda r: abs(math.log10(r["lr"] / lr))) if close else None


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | grid-best Adam lr (metric) | grid-best AdamW+cos lr | method | lr | x grid-best | metric "
             "at lr | regret (pts; ppl: %) | cost: s (share of this run; of a 3125-step run) |", "|" + "---|" * 9]
    for row in rows:
        adam, adamw = row["grid_best"]["adam"], row["grid_best"]["adamw_cosine"]
        head = (f"{row['workload']}{' (calibration)' if row['calibration'] else ''} | {adam['lr']:.3g} "
                f"({adam['metric']:.3f}) | {adamw['lr']:.3g} ({adamw['metric']:.3f})" if adamw else
                f"{row['workload']}{' (calibration)' if row['calibration'] else ''} | {adam['lr']:.3g} "
                f"({adam['metric']:.3f}) | not run")
        for method in SUGGESTION_METHODS:
            m = row["methods"].get(method)
            if m is None:
                continue
            near = m["nearest_grid"]
            if m["metric"] is not None:
                metric, regret = f"{m['metric']:.3f}", f"{m['regret']:.1f}"
            elif near is not None:  # not trained: the grid run at about the same lr, marked as such
                metric = f"~{near['metric']:.3f} (grid {near['lr']:.3g})"
                lost = 100 * (adam["metric"] - near["metric"])
                if not row.get("higher_is_better", True):
                    lost = 100 * (near["metric"] - adam["metric"]) / adam["metric"]
                regret = f"~{lost:.1f}"
            else:
                metric, regret = "not trained", "-"
            lines.append(f"| {head} | {method} | {m['lr']:.3g} | {m['ratio']:.2f} | {metric} | {regret} | "
                         f"{m['cost_seconds']:.0f} ({100 * m['cost_share']:.0f}%; "
                         f"{100 * m['cost_share_3125']:.1f}%) |")
            head = " | | "
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("grid", "methods", "all", "table"), required=True)
    parser.add_argument("--train", nargs="*", default=["suggest"], help="methods whose lr gets a full Adam run")
    parser.add_argument("--methods", nargs="+", default=list(MEASURED), choices=list(MEASURED),
                        help="methods to measure (the others follow from these)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args()

    if args.phase in ("grid", "all"):
        for name in args.workloads:  # each workload's Adam grid and suggestions, then the AdamW + cosine grids
            grid_search(WORKLOADS[name], "adam")
            if args.phase == "all":
                train_suggestions(WORKLOADS[name], args.train, tuple(args.methods))
        if "adamw_cosine" in args.arms:
            for name in args.workloads:
                grid_search(WORKLOADS[name], "adamw_cosine")
    if args.phase == "methods":
        for name in args.workloads:
            train_suggestions(WORKLOADS[name], args.train, tuple(args.methods))
    rows = [row for row in map(summarise, (WORKLOADS[name] for name in args.workloads)) if row is not None]
    # the workloads not summarised here (their runs are on another machine) keep their earlier rows
    summarised = {row["workload"] for row in rows}
    earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows = [row for row in earlier if row["workload"] not in summarised] + rows
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))
    print(table(rows))


def train_suggestions(workload: Workload, trained: list[str], measured: tuple[str, ...]) -> None:
    suggestions = measure_methods(workload, measured)
    for method in trained:
        run(workload, "adam", suggestions[method].lr, tag="suggested")


if __name__ == "__main__":
    main()
