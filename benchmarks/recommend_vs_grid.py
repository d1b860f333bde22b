"""`adamlab recommend` at a 25% budget against the full grid of the same search space, on the same dev split.

Per workload (default: MiniLM + LoRA on AG News and on SST-2), in one folder:

1. ``recommend`` with ``--budget 0.25`` and 2 seeds: its pick, its test accuracy, its trial-steps;
2. the full grid: every configuration of the same search space trained to the end on 2 seeds, on the same train/dev
   files. The grid's runs use the recommendation's trial folders, so a configuration the recommendation already
   trained (or paused) is continued rather than repeated: continuation is bit-identical to an uninterrupted run
   (tests/studies/test_recommend_resume.py), so the grid's numbers are those of a fresh grid, only cheaper to get.
   Its cost is counted as a fresh grid's: configurations x steps x 2 seeds.
3. the grid's best selected on dev (mean over seeds) and the oracle selected on test, both scored on test.

Reported per workload: compute ratio (recommend / grid trial-steps), the test accuracy of the recommendation, of
the dev-selected grid best and of the test oracle, the regret in points against the dev-selected best, the pick's
rank in the grid on dev and whether it is in the top 3, and whether the pick is degenerate (excluded by the
guards in the grid). Targets: ratio <= 0.25, regret <= 0.5 points, never degenerate. Writes JSON.

    python benchmarks/recommend_vs_grid.py                                    # both workloads, 150 steps
    python benchmarks/recommend_vs_grid.py --tasks sst2 --steps 81 --optimizers adamw,lion

Each workload's result is added to the JSON file as it finishes (a rerun of one task replaces its entry), so the
workloads can run as parallel processes, one per core:

    OMP_NUM_THREADS=1 python benchmarks/recommend_vs_grid.py --tasks ag_news &
    OMP_NUM_THREADS=1 python benchmarks/recommend_vs_grid.py --tasks sst2

After a change to ``recommend``, ``--out NEW --grid-from OLD`` runs the recommendation afresh and reads the grid
back from OLD (refused unless the train and dev files are byte-identical).
"""

from __future__ import annotations

import argparse
import fcntl
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from adamlab.atomic import read_json, write_json
from adamlab.studies.executors import run_trial
from adamlab.studies.guards import exclusion_reason, majority_baseline
from adamlab.studies.recommend import (NothingToRecommend, RecommendSettings, candidates, recommend,
                                       score_on_examples)
from adamlab.studies.trials import trial_key
from adamlab.tasks import get_task

TARGETS = {"ratio": 0.25, "regret_points": 0.5}
GRID_SEEDS = 2


def settings_for(task: str, args, folder: Path) -> RecommendSettings:
    return RecommendSettings(
        model=args.model, task=task, steps=args.steps, out=str(folder), optimizers=args.optimizers.split(","),
        schedules=args.schedules.split(","), budget=0.25, seeds=GRID_SEEDS, dev_fraction=args.dev_fraction,
        test_limit=args.test_limit, min_rung_steps=args.min_rung,
        train_args={"batch_size": 16, "max_seq_len": 64, "warmup_steps": 4, "eval_batch_size": 64,
                    "lora": {"r": 8, "alpha": 16, "dropout": 0.05}},
    )


def run_workload(task_name: str, args, console: Console) -> dict:
    folder = args.out / task_name
    settings = settings_for(task_name, args, folder)
    started = time.perf_counter()
    try:
        picked = recommend(settings, log=console.print)
    except NothingToRecommend as refusal:  # no answer is a failed workload, recorded as such, not a crash
        return {"workload": f"{args.model} + LoRA on {task_name}, {settings.steps} steps", "task": task_name,
                "recommendation": None, "refused": str(refusal), "meets_targets": False}
    recommend_seconds = time.perf_counter() - started

    task = get_task(task_name)
    split = picked["dev_split"]
    dev_examples = task.load("eval", split["dev_file"])
    test_examples = task.load("eval", None, args.test_limit)
    majority = majority_baseline([e.label for e in dev_examples])
    grid = []
    started = time.perf_counter()
    searched = candidates(settings)
    grid_folder, train_file, dev_file = folder, split["train_file"], split["dev_file"]
    if args.grid_from is not None:
        # A grid already trained over the same search space on byte-identical train/dev files is this grid: its
        # trial folders are read back (the trial keys name the data files, so they are computed with its paths).
        grid_folder = args.grid_from / task_name
        train_file, dev_file = (str(grid_folder / "data" / Path(name).name) for name in (train_file, dev_file))
        for ours, theirs in ((split["train_file"], train_file), (split["dev_file"], dev_file)):
            if Path(ours).read_bytes() != Path(theirs).read_bytes():
                raise SystemExit(f"--grid-from: {theirs} differs from {ours}, so that grid is not this one")
    # A second process given --reverse fills the grid from the other end; each trial folder is trained under its
    # lock and read back once finished, so the two meet in the middle without running anything twice.
    order = [(c, seed) for c in searched for seed in range(GRID_SEEDS)]
    results = {}
    for candidate, seed in reversed(order) if args.reverse else order:
        config = settings.trial_config(candidate, seed, "", train_source=train_file, dev_source=dev_file)
        config.out = str(grid_folder / "trials" / trial_key(config))
        outcome = run_trial(config)
        accuracy = (outcome.record or {}).get("metrics", {}).get("accuracy")
        reason = exclusion_reason(outcome.status, [p.get("prediction") for p in outcome.predictions], accuracy,
                                  majority, outcome.error)
        test = test_accuracy(config.out_dir, task, test_examples) if outcome.status == "done" else None
        results[candidate, seed] = {"dev": accuracy, "test": test, "reason": reason}
        console.print(f"  grid {candidate.label} seed {seed}: dev "
                      f"{accuracy}, test {test}" + (f" (excluded: {reason})" if reason else ""))
    for candidate in searched:
        seeds = [results[candidate, seed] for seed in range(GRID_SEEDS)]
        usable = all(s["reason"] is None for s in seeds)
        grid.append({**candidate.to_dict(), "usable": usable, "seeds": seeds,
                     "dev": float(np.mean([s["dev"] or 0.0 for s in seeds])),
                     "test": float(np.mean([s["test"] or 0.0 for s in seeds]))})
    grid_seconds = time.perf_counter() - started

    usable = [g for g in grid if g["usable"]]
    by_dev = sorted(usable, key=lambda g: -g["dev"])
    dev_best, oracle = by_dev[0], max(usable, key=lambda g: g["test"])

    def same(g):
        return (g["optimizer"], g["lr"], g["schedule"]) == (picked["optimizer"], picked["lr"], picked["schedule"])

    rank = next((i + 1 for i, g in enumerate(by_dev) if same(g)), None)
    grid_steps = len(grid) * settings.steps * GRID_SEEDS
    result = {
        "workload": f"{args.model} + LoRA on {task_name}, {settings.steps} steps", "task": task_name,
        "configurations": len(grid),
        "recommendation": {k: picked[k] for k in ("optimizer", "lr", "schedule", "dev", "test", "cost")},
        "grid_folder": str(grid_folder),
        "recommend_seconds": recommend_seconds, "grid_seconds_beyond_recommend": grid_seconds,
        "ratio": picked["cost"]["trial_steps"] / grid_steps,
        "grid_trial_steps": grid_steps,
        "test": {"recommended": picked["test"]["mean"], "grid_dev_best": dev_best["test"], "oracle": oracle["test"]},
        "grid_dev_best": {k: dev_best[k] for k in ("optimizer", "lr", "schedule", "dev", "test")},
        "oracle": {k: oracle[k] for k in ("optimizer", "lr", "schedule", "dev", "test")},
        "regret_points": 100 * (dev_best["test"] - picked["test"]["mean"]),
        # The pick's own grid entry: the same 2 seeds as the grid's best, so seed noise cancels out of this regret.
        "regret_points_same_seeds": next((100 * (dev_best["test"] - g["test"]) for g in grid if same(g)), None),
        "rank_in_grid_on_dev": rank, "within_top3": rank is not None and rank <= 3,
        "degenerate": not any(same(g) for g in usable),
        "grid_degenerate": sum(not g["usable"] for g in grid),
        "grid": grid,
    }
    result["meets_targets"] = (result["ratio"] <= TARGETS["ratio"] and result["regret_points"] <= TARGETS["regret_points"]
                               and not result["degenerate"])
    return result


def test_accuracy(run: Path, task, examples) -> float:
    """The test accuracy of a finished grid run, scored once and kept in its folder (a run both grid processes
    read back is not scored twice)."""
    cached = run / "benchmark_test_accuracy.json"
    if cached.exists():
        return read_json(cached)["accuracy"]
    accuracy = float(np.mean(score_on_examples(run, task, examples)))
    write_json(cached, {"accuracy": accuracy, "examples": len(examples)})
    return accuracy


def record(path: Path, workload: dict) -> None:
    """Add one workload's result to the JSON file, replacing an earlier result for the same task, so workloads can
    run as separate processes (one per core) into one file; a lock serialises their read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_json(path) if path.exists() else {"targets": TARGETS, "workloads": []}
        results["workloads"] = [w for w in results["workloads"] if w.get("task") != workload["task"]] + [workload]
        write_json(path, results, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--tasks", default="ag_news,sst2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--optimizers", default="adamw,adabelief,lion,yogi,sgd")
    parser.add_argument("--schedules", default="cosine")
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--test-limit", type=int, default=500)
    parser.add_argument("--min-rung", type=int, default=10)
    parser.add_argument("--reverse", action="store_true",
                        help="run the grid from its last trial: a second process filling the same grid")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/recommend_vs_grid"))
    parser.add_argument("--grid-from", type=Path, default=None,
                        help="the --out of an earlier run whose grid (same search space and data) to reuse")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "recommend_vs_grid.json")
    args = parser.parse_args()
    console = Console()
    for task in args.tasks.split(","):
        record(args.json, run_workload(task, args, console))
    for w in read_json(args.json)["workloads"]:
        if w["recommendation"] is None:
            console.print(f"{w['workload']}: no recommendation ({w['refused']})")
            continue
        console.print(f"{w['workload']}: ratio {w['ratio']:.2f}, test recommended {w['test']['recommended']:.3f} vs "
                      f"grid dev-best {w['test']['grid_dev_best']:.3f} (regret {w['regret_points']:+.1f} points), "
                      f"oracle {w['test']['oracle']:.3f}; rank on dev {w['rank_in_grid_on_dev']}, "
                      f"degenerate {w['degenerate']}; meets targets: {w['meets_targets']}")
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
