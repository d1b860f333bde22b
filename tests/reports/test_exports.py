"""The published study's benchmark JSON and AlgoPerf's trial folders hold the store's numbers."""

import csv
import json

import pytest

from adamlab.reports.exports import configuration_name, per_choice_accuracy, write_exports
from adamlab.studies import Owner, Store, TrialOutcome, expand_trials, parse_spec
from adamlab.tasks import get_task

from ..studies.tiny import TINY_SPEC

CLASSES = ("World", "Sports", "Business", "Sci/Tech")
# (gold class, predicted class or None for an unreadable output) per evaluation example.
PAIRS = [(0, 0), (0, 1), (1, 1), (1, 1), (2, None), (3, 3), (3, 0), (3, 3)]


def predictions():
    return [{"id": f"ex{i}", "output": "?" if p is None else p, "prediction": p, "references": [CLASSES[g]]}
            for i, (g, p) in enumerate(PAIRS)]


def curves(store):
    return {trial.key: store.step_metrics(trial.key) for trial in store.trials()}


@pytest.fixture
def store(tmp_path):
    """A finished tiny study written without training: seed 1 of ``adamw-cosine`` diverged, and the first trial
    was interrupted once and resumed (two attempts)."""
    spec = parse_spec(TINY_SPEC, "study.yaml")
    store = Store.open(tmp_path, create=True)
    store.register(spec, expand_trials(spec, tmp_path))
    owner = Owner.current()
    first = store.claim(owner)
    store.release(first.key, owner)
    while (trial := store.claim(owner)) is not None:
        steps = [{"step": s, "loss": 2.0 - s / 10, "lr": trial.lr, "step_seconds": 0.5} for s in (1, 2, 3)]
        if trial.arm == "adamw-cosine" and trial.seed == 1:
            store.finish(trial.key, owner, TrialOutcome("diverged", 2, 1.0, None, steps[:2], [], {}))
            continue
        evaluations = [{"step": 2, "accuracy": 0.25, "weighted_f1": 0.2, "n_total": 8, "n_invalid": 2, "seconds": 0.25},
                       {"step": 3, "accuracy": 0.625, "weighted_f1": 0.6, "n_total": 8, "n_invalid": 1, "seconds": 0.5}]
        record = {"status": "done", "steps_completed": 3, "tokens_seen": 1234, "wall_seconds": 1.5,
                  "peak_memory": {"peak_rss_bytes": 512 * 1024 * 1024}, "optimizer": {"name": trial.optimizer},
                  "schedule": {"name": trial.schedule}, "model": {"template": "abc123"}, "evaluation": {"mode": "score"},
                  "environment": {"python": "3.11"}}
        environment = {"python": "3.11", "platform": "Linux", "packages": {"torch": "2.13.0"},
                       "hardware": {"machine": "x86_64", "processor": "cpu", "cpu_threads": 2}}
        store.finish(trial.key, owner, TrialOutcome("done", 3, 1.5, None, steps, evaluations, environment, record,
                                                    predictions()))
    yield store
    store.close()


def test_per_choice_accuracy_is_the_recall_of_each_answer():
    task = get_task("ag_news")
    assert task.answer_choices == CLASSES
    # Business: its one example was unreadable, so it is wrong, never counted as any class.
    assert per_choice_accuracy(task, predictions()) == {"World": 0.5, "Sports": 1.0, "Business": 0.0,
                                                        "Sci/Tech": 2 / 3}
    assert per_choice_accuracy(get_task("squad"), predictions()) is None


def test_the_store_keeps_each_trials_record_and_predictions(store):
    done = [t for t in store.trials() if t.status == "done"]
    assert store.predictions(done[0].key) == predictions()
    record = store.run_record(done[0].key)
    assert record["tokens_seen"] == 1234 and "environment" not in record  # kept once, in its own table
    assert [e["step"] for e in store.evaluations(done[0].key)] == [2, 3]


def test_one_benchmark_json_per_fine_tuned_model_in_the_published_format(store, tmp_path):
    write_exports(store, tmp_path / "report", curves(store))
    folder = tmp_path / "report" / "benchmark" / "tiny-llama__ag_news"
    done = [t for t in store.trials() if t.status == "done"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"hf_benchmark_{configuration_name(t)}.json"
                                                              for t in done)  # the diverged trial has no model
    for trial in done:
        result = json.loads((folder / f"hf_benchmark_{configuration_name(trial)}.json").read_text())
        assert set(result) == {"model_name", "model_path", "benchmark", "metrics", "hardware", "per_choice_accuracy",
                               "metadata", "protocol"}
        assert result["benchmark"] == "ag_news" and result["model_path"].endswith(f"{trial.key}/adapter")
        assert result["metrics"] == {"accuracy": 0.625, "weighted_f1": 0.6, "evaluation_time": 0.5,
                                     "throughput_items_per_sec": 16.0}
        assert result["metadata"] == {"total_examples": 8, "correct_predictions": 5, "framework": "transformers",
                                      "task_type": "text_classification"}
        assert result["per_choice_accuracy"]["Sci/Tech"] == 2 / 3
        assert result["hardware"]["peak_rss_mb"] == 512 and result["hardware"]["gpu_memory_used_mb"] == 0
        protocol = result["protocol"]
        assert (protocol["trial"], protocol["seed"], protocol["n_invalid"]) == (trial.key, trial.seed, 1)
        assert protocol["tokens_seen"] == 1234 and protocol["optimizer_steps"] == 3
        assert protocol["model"]["template"] == "abc123" and protocol["environment"]["packages"]["torch"] == "2.13.0"
        assert protocol["tuning_budget"] == {"search_space": "one fixed learning rate per arm", "trials_per_arm": 3}


def test_algoperf_trial_folders(store, tmp_path):
    write_exports(store, tmp_path / "report", curves(store))
    workload = tmp_path / "report" / "algoperf" / "tiny-llama__ag_news_pytorch"
    trials = store.trials()
    assert sorted(p.name for p in workload.iterdir()) == [f"trial_{n}" for n in range(1, len(trials) + 1)]
    for number, trial in enumerate(trials, start=1):
        folder = workload / f"trial_{number}"
        assert sorted(p.name for p in folder.iterdir()) == ["eval_measurements.csv", "hparams.json", "meta_data.json"]
        hparams = json.loads((folder / "hparams.json").read_text())
        assert (hparams["trial_key"], hparams["learning_rate"], hparams["schedule"]) == \
            (trial.key, trial.lr, trial.schedule)
        meta = json.loads((folder / "meta_data.json").read_text())
        assert (meta["rng_seed"], meta["workload.target_metric"], meta["status"]) == (trial.seed, "accuracy",
                                                                                     trial.status)
        with (folder / "eval_measurements.csv").open() as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        assert reader.fieldnames == sorted(reader.fieldnames)
        if trial.status == "diverged":  # no evaluation: the header alone
            assert rows == [] and "preemption_count" in reader.fieldnames
            continue
        assert [int(r["global_step"]) for r in rows] == [2, 3]
        assert [float(r["test/accuracy"]) for r in rows] == [0.25, 0.625]
        assert [float(r["train/loss"]) for r in rows] == [1.8, 1.7]
        assert [float(r["score"]) for r in rows] == [1.0, 1.5]  # training time up to the evaluation
        assert [float(r["accumulated_eval_time"]) for r in rows] == [0.25, 0.75]
        assert {int(r["preemption_count"]) for r in rows} == {trial.attempts - 1}
    assert trials[0].attempts == 2  # released once, then run again
