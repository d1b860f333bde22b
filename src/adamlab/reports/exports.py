"""A study's results in the formats other tools read, made from the store only.

* ``benchmark/<model>__<task>/hf_benchmark_<configuration>.json``: per fine-tuned model (a finished trial), the
  result file of the published Hybrid Adam+SGD study (docs/protocols.md §B.4, its ``save_hf_benchmark_format``), with
  what docs/protocols.md §G.11 asks every result to record added under ``protocol``.
* ``algoperf/<model>__<task>_pytorch/trial_<n>/``: the per-trial folder of AlgoPerf's logger: ``hparams.json``,
  ``meta_data.json`` and ``eval_measurements.csv`` (one row per evaluation, cumulative times, preemption count).
  Trials are numbered in study order within each model x task; ``hparams.json`` names the trial's key.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..studies.store import Store, StudyRow, TrialRow
from ..studies.trials import trial_folder
from ..tasks import get_task
from ..tasks.base import Task
from ..training.lr_source import format_lr

BENCHMARK_FOLDER = "benchmark"
ALGOPERF_FOLDER = "algoperf"
FRAMEWORK = "pytorch"
# The published study's metadata.task_type, by adamlab task kind.
TASK_TYPES = {"classification": "text_classification", "multiple_choice": "multiple_choice_qa",
              "extractive_qa": "extractive_qa", "math": "math_word_problems", "regression": "text_regression",
              "generation": "text_generation", "language_modeling": "language_modeling"}
MIB = 1024 * 1024
CLOCK_COLUMNS = ("global_step", "train/loss", "score", "accumulated_submission_time", "accumulated_eval_time",
                 "total_duration", "preemption_count")


def slug(text: str) -> str:
    """A file name for a model id such as ``meta-llama/Llama-3.2-3B-Instruct``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def configuration_name(trial: TrialRow) -> str:
    """A fine-tuned model's name: what the published study called "adamw" or "hybrid", made unique per trial."""
    return slug(f"{trial.arm}-{trial.schedule}-lr{format_lr(trial.lr)}-seed{trial.seed}")


def write_exports(store: Store, folder: Path, curves: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """Write both formats under ``folder`` (the report folder) and return the files written. ``curves``: each
    trial's step metrics, as ``Store.step_metrics`` returns them (the report has read them already)."""
    study, trials, environments = store.study(), store.trials(), store.environments()
    written = []
    numbers: Counter[str] = Counter()  # AlgoPerf trial numbers per model x task
    for trial in trials:
        task = get_task(trial.config["task"], **trial.config["task_args"])
        group = f"{slug(trial.model)}__{slug(trial.task)}"
        record, evaluations = store.run_record(trial.key), store.evaluations(trial.key)
        environment = environments.get(trial.key, {})
        if trial.status == "done" and record is not None and evaluations:
            path = folder / BENCHMARK_FOLDER / group / f"hf_benchmark_{configuration_name(trial)}.json"
            content = benchmark_result(study, trial, task, record, evaluations[-1], store.predictions(trial.key),
                                       environment, store.study_dir)
            written.append(_write(path, json.dumps(content, indent=2)))
        if trial.status == "queued":  # never ran: AlgoPerf has no folder for a trial that did not start
            continue
        numbers[group] += 1
        trial_dir = folder / ALGOPERF_FOLDER / f"{group}_{FRAMEWORK}" / f"trial_{numbers[group]}"
        written.append(_write(trial_dir / "hparams.json", json.dumps(algoperf_hparams(trial), indent=2)))
        written.append(_write(trial_dir / "meta_data.json",
                              json.dumps(algoperf_meta_data(study, trial, task, environment), indent=2)))
        written.append(_write(trial_dir / "eval_measurements.csv",
                              algoperf_eval_measurements(trial, curves[trial.key], evaluations)))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the published format


def per_choice_accuracy(task: Task, predictions: list[dict[str, Any]]) -> dict[str, float] | None:
    """Recall of each answer (the study's "per-choice accuracy"): the share of the examples whose gold answer is
    that choice that were predicted as it. None for tasks without a fixed set of answers."""
    if not task.answer_choices:
        return None
    recall = {}
    for index, choice in enumerate(task.answer_choices):
        gold = [p for p in predictions if p["references"][0] == choice]
        recall[choice] = sum(p["prediction"] == index for p in gold) / len(gold) if gold else 0.0
    return recall


def correct_predictions(task: Task, metrics: dict[str, Any]) -> int | None:
    """How many evaluation examples were right: accuracy for classification, choices and math; exact match for
    extractive QA."""
    share = metrics.get("exact_match") if task.kind == "extractive_qa" else metrics.get("accuracy")
    return None if share is None else round(share * metrics["n_total"])


def benchmark_result(study: StudyRow, trial: TrialRow, task: Task, record: dict[str, Any], evaluation: dict[str, Any],
                     predictions: list[dict[str, Any]], environment: dict[str, Any], study_dir: Path) -> dict[str, Any]:
    scores = {k: v for k, v in evaluation.items() if k not in ("step", "seconds", "n_total", "n_invalid")}
    seconds = evaluation["seconds"]
    peak = record.get("peak_memory", {})
    hardware = environment.get("hardware", {})
    adapter = "adapter" if trial.config.get("lora") is not None else "model"
    return {
        "model_name": configuration_name(trial),
        "model_path": str(trial_folder(study_dir, trial.key) / adapter),
        "benchmark": task.name,
        "metrics": {**scores, "evaluation_time": seconds,
                    "throughput_items_per_sec": evaluation["n_total"] / seconds if seconds else None},
        "hardware": {
            "gpu_memory_used_mb": peak["cuda_peak_bytes"] / MIB if "cuda_peak_bytes" in peak else 0,
            "gpu_name": hardware.get("gpu"),
            "peak_rss_mb": peak["peak_rss_bytes"] / MIB if "peak_rss_bytes" in peak else None,
            "machine": hardware.get("machine"),
            "cpu_threads": hardware.get("cpu_threads"),
        },
        "per_choice_accuracy": per_choice_accuracy(task, predictions),
        "metadata": {
            "total_examples": evaluation["n_total"],
            "correct_predictions": correct_predictions(task, evaluation),
            "framework": "transformers",
            "task_type": TASK_TYPES[task.kind],
        },
        "protocol": {  # docs/protocols.md §G.11
            "study": study.name,
            "trial": trial.key,
            "base_model": trial.model,
            "arm": trial.arm,
            "seed": trial.seed,
            "n_invalid": evaluation["n_invalid"],
            "primary_metric": task.primary_metric,
            "evaluation": record.get("evaluation"),
            "optimizer": record.get("optimizer"),
            "schedule": record.get("schedule"),
            "stepsize_estimate": trial.stepsize_estimate,
            "model": record.get("model"),  # source, dtype, chat-template hash, LoRA settings
            "optimizer_steps": record.get("steps_completed"),
            "tokens_seen": record.get("tokens_seen"),
            "train_seconds": record.get("wall_seconds"),
            "peak_memory": peak,
            "data": record.get("data"),
            "tuning_budget": study.budget,
            "config": trial.config,
            "environment": environment,
        },
    }


# ---------------------------------------------------------------------------------------------- AlgoPerf


def algoperf_hparams(trial: TrialRow) -> dict[str, Any]:
    """The trial's point in the search space, AlgoPerf's hparams.json, with the full optimizer and schedule."""
    config = trial.config
    return {
        "learning_rate": trial.lr,
        "optimizer": trial.optimizer,
        **config.get("optimizer_args", {}),
        "schedule": trial.schedule,
        **config.get("schedule_args", {}),
        "warmup_steps": config.get("warmup_steps"),
        "batch_size": config.get("batch_size"),
        "grad_accum": config.get("grad_accum"),
        "max_grad_norm": config.get("max_grad_norm"),
        "arm": trial.arm,
        "trial_key": trial.key,
    }


def algoperf_meta_data(study: StudyRow, trial: TrialRow, task: Task, environment: dict[str, Any]) -> dict[str, Any]:
    """AlgoPerf's meta_data.json: workload properties, software and hardware, and the seed."""
    hardware = environment.get("hardware", {})
    meta = {
        "workload": f"{trial.model}__{task.name}",
        "workload.model": trial.model,
        "workload.task": task.name,
        "workload.target_metric": task.primary_metric,
        "workload.step_hint": trial.config.get("steps"),
        "study": study.name,
        "os_platform": environment.get("platform"),
        "python_version": environment.get("python"),
        "packages": environment.get("packages"),
        "cpu_model_name": hardware.get("processor"),
        "cpu_threads": hardware.get("cpu_threads"),
        "rng_seed": trial.seed,
        "status": trial.status,
    }
    if "gpu" in hardware:
        meta.update({"gpu_model_name": hardware["gpu"], "gpu_count": hardware.get("gpu_count")})
    return meta


def algoperf_eval_measurements(trial: TrialRow, steps: list[dict[str, Any]], evaluations: list[dict[str, Any]]) -> str:
    """One row per evaluation: the step, training loss there, the task's scores as ``test/<metric>``, and
    AlgoPerf's cumulative clocks (``score`` is the accumulated training time, evaluation time kept apart). The
    preemption count is how many times the trial was resumed."""
    rows = []
    loss_at = {s["step"]: s["loss"] for s in steps}
    for evaluation in evaluations:
        step = evaluation["step"]
        train_time = sum(s["step_seconds"] or 0.0 for s in steps if s["step"] <= step)
        eval_time = sum(e["seconds"] or 0.0 for e in evaluations if e["step"] <= step)
        row = {"global_step": step, "train/loss": loss_at.get(step),
               **{f"test/{k}": v for k, v in evaluation.items() if k not in ("step", "seconds")},
               "score": train_time, "accumulated_submission_time": train_time, "accumulated_eval_time": eval_time,
               "total_duration": train_time + eval_time, "preemption_count": max(trial.attempts - 1, 0)}
        rows.append(row)
    # AlgoPerf writes its columns sorted; a trial that never reached an evaluation gets the header alone.
    columns = sorted(set(CLOCK_COLUMNS).union(*rows))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
