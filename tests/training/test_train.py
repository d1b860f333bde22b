"""The fine-tuning engine end to end on tiny random models: records, exact resume, divergence, data parallelism."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adamlab.models import LoraSettings
from adamlab.optim import available_optimizers
from adamlab.training import TrainConfig, train

TINY = dict(model="tiny-llama", task="ag_news", train_limit=64, eval_limit=12, max_seq_len=96, batch_size=4,
            lora=LoraSettings(r=4, alpha=8, dropout=0.1), lr=1e-2, eval_batch_size=6)


def tiny_config(out: Path, **overrides) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, "steps": 6, **overrides})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_the_update_norm_is_left_out_when_it_would_copy_a_large_model(tmp_path, monkeypatch):
    from adamlab.training import loop

    monkeypatch.setattr(loop, "UPDATE_NORM_MAX_ELEMENTS", 0)  # as if the trainable weights were too many to copy
    result = train(tiny_config(tmp_path, steps=2, trackers=["tensorboard"]), show_progress=False)
    steps = read_jsonl(tmp_path / "metrics.jsonl")
    assert result.status == "done" and [s["update_norm"] for s in steps] == [None, None]
    assert all(s["grad_norm"] > 0 for s in steps)


def test_a_run_records_steps_evaluation_predictions_and_result(tmp_path):
    result = train(tiny_config(tmp_path, schedule="cosine", warmup_steps=2, eval_every=3), show_progress=False)
    assert result.status == "done" and result.steps_completed == 6

    steps = read_jsonl(tmp_path / "metrics.jsonl")
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [s["lr"] for s in steps[:2]] == pytest.approx([0.5e-2, 1e-2])  # warmup (t + 1)/W
    for key in ("loss", "grad_norm", "update_norm", "step_seconds", "tokens_per_second", "rss_bytes"):
        assert all(s[key] > 0 for s in steps), key

    assert [e["step"] for e in read_jsonl(tmp_path / "evals.jsonl")] == [3, 6]
    predictions = read_jsonl(tmp_path / "predictions.jsonl")
    assert len(predictions) == 12 and all(p["prediction"] in range(4) for p in predictions)

    record = json.loads((tmp_path / "result.json").read_text())
    assert record == json.loads(json.dumps(result.record.to_dict(), default=str))
    assert [s.to_dict() for s in result.steps] == steps and result.evaluations == read_jsonl(tmp_path / "evals.jsonl")
    assert result.predictions == predictions
    assert record["metrics"]["n_total"] == 12 and set(record["metrics"]) >= {"accuracy", "macro_f1", "weighted_f1"}
    assert record["evaluation"]["mode"] == "score"
    assert record["data"] == {"n_train": 64, "n_eval": 12, "n_truncated_train": record["data"]["n_truncated_train"]}
    assert record["optimizer"]["param_groups"][0]["initial_lr"] == 1e-2  # the base lr; "lr" is the last one
    assert record["model"]["template"] and record["environment"]["packages"]["torch"] == torch.__version__
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_same_seed_same_run_and_another_seed_differs(tmp_path):
    first = train(tiny_config(tmp_path / "a", steps=3), show_progress=False)
    again = train(tiny_config(tmp_path / "b", steps=3), show_progress=False)
    other = train(tiny_config(tmp_path / "c", steps=3, seed=1), show_progress=False)
    losses = [[s["loss"] for s in read_jsonl(r.out_dir / "metrics.jsonl")] for r in (first, again, other)]
    assert losses[0] == losses[1] != losses[2]


def _cli(out: Path, steps: int, checkpoint_every: int) -> list[str]:
    return [sys.executable, "-m", "adamlab", "train", "--model", "tiny-llama", "--task", "ag_news", "--out", str(out),
            "--steps", str(steps), "--checkpoint-every", str(checkpoint_every), "--batch-size", "4",
            "--train-limit", "64", "--eval-limit", "12", "--max-seq-len", "96", "--lora-r", "4", "--lora-alpha", "8",
            "--lora-dropout", "0.1", "--lr", "0.01", "--optimizer", "adabelief", "--schedule", "cosine",
            "--no-progress"]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_an_interrupted_run_resumes_to_the_same_end(tmp_path, how):
    """SIGKILL loses only the steps after the last checkpoint; Ctrl-C checkpoints the current step first. Either
    way, running the same command again ends bit-identical to a run that was never interrupted."""
    steps = 40
    straight = subprocess.run(_cli(tmp_path / "straight", steps, 10), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "resumed"
    process = subprocess.Popen(_cli(out, steps, 10), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoints" / "step-00000010", process)
    process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == (-signal.SIGKILL if how == "kill" else 130)
    assert not (out / "adapter").exists(), "the run finished before it was interrupted"

    resumed = subprocess.run(_cli(out, steps, 10), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert read_jsonl(out / "metrics.jsonl")[-1]["step"] == steps
    strip = lambda rows: [{k: v for k, v in r.items() if k in ("step", "loss", "lr", "grad_norm", "update_norm")}
                          for r in rows]
    assert strip(read_jsonl(out / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    for name, tensor in adapter_weights(tmp_path / "straight").items():
        assert torch.equal(tensor, adapter_weights(out)[name]), name
    assert (json.loads((out / "result.json").read_text())["metrics"]
            == json.loads((tmp_path / "straight" / "result.json").read_text())["metrics"])


def test_the_parts_of_train_compose_and_a_resumed_run_returns_every_step(tmp_path):
    from adamlab.training import loop

    config = tiny_config(tmp_path, steps=4, checkpoint_every=2)
    run = loop.prepare(config)
    loop.resume(run)
    first = loop.train_step(run)
    assert (first.step, run.step) == (1, 1) and read_jsonl(tmp_path / "metrics.jsonl") == [first.to_dict()]
    status, diverged_at = loop.run_steps(run)
    result = loop.finish(run, status, diverged_at)
    assert (status, diverged_at, [s.step for s in result.steps]) == ("done", None, [1, 2, 3, 4])

    (tmp_path / "result.json").unlink()  # as if killed after the last step, before finishing: resume from step 2
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000004")
    again = train(config, show_progress=False)
    measured = lambda steps: [(s.step, s.loss, s.lr, s.grad_norm, s.update_norm) for s in steps]
    assert measured(again.steps) == measured(result.steps) and again.metrics == result.metrics
    scores = lambda evaluations: [{k: v for k, v in e.items() if k != "seconds"} for e in evaluations]
    assert scores(again.evaluations) == scores(result.evaluations)


def test_a_non_finite_loss_stops_the_run_as_diverged(tmp_path):
    result = train(tiny_config(tmp_path, optimizer="adam", lr=1e30, max_grad_norm=None, steps=20), show_progress=False)
    record = json.loads((tmp_path / "result.json").read_text())
    assert result.status == record["status"] == "diverged"
    assert 1 < record["diverged_at_step"] <= 20 and record["steps_completed"] == record["diverged_at_step"] - 1


def test_gradient_accumulation_gives_the_gradient_of_the_whole_batch(tmp_path):
    """Micro-batches of unequal token counts: the token-weighted loss makes accumulation exact."""
    whole = train(tiny_config(tmp_path / "whole", steps=2, optimizer="sgd", lr=0.5, lora=LoraSettings(r=4, alpha=8, dropout=0.0)),
                  show_progress=False)
    split = train(tiny_config(tmp_path / "split", steps=2, optimizer="sgd", lr=0.5, grad_accum=4, lora=LoraSettings(r=4, alpha=8, dropout=0.0)),
                  show_progress=False)
    for name, tensor in adapter_weights(whole.out_dir).items():
        torch.testing.assert_close(adapter_weights(split.out_dir)[name], tensor, rtol=1e-5, atol=1e-7)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) ends where a single process does."""
    common = ["--model", "tiny-qwen", "--task", "ag_news", "--steps", "3", "--batch-size", "4", "--train-limit", "32",
              "--eval-limit", "4", "--max-seq-len", "64", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0",
              "--lr", "0.01", "--no-progress", "--checkpoint-every", "0"]
    single = subprocess.run([sys.executable, "-m", "adamlab", "train", "--out", str(tmp_path / "one"), *common],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    double = subprocess.run([*launcher, "-m", "adamlab", "train", "--out", str(tmp_path / "two"), *common],
                            capture_output=True, text=True, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "result.json").read_text())["processes"] == 2
    for name, tensor in adapter_weights(tmp_path / "one").items():
        torch.testing.assert_close(adapter_weights(tmp_path / "two")[name], tensor, rtol=1e-4, atol=1e-6)


def test_tensorboard_tracker_receives_train_and_eval_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config(tmp_path, steps=3, trackers=["tensorboard"]), show_progress=False)
    event_dirs = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    assert event_dirs, "no TensorBoard event file written"
    tags = set()
    for folder in event_dirs:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "eval/accuracy"} <= tags


def test_adam_dds_estimates_its_step_size_before_the_first_step_and_reuses_it(tmp_path):
    config = tiny_config(tmp_path, optimizer="adam_dds", optimizer_args={"samples": 8, "multiplier": 0.5}, steps=3)
    result = train(config, show_progress=False)
    assert result.status == "done"
    estimate = json.loads((tmp_path / "stepsize.json").read_text())
    group = result.record.optimizer["param_groups"][0]
    assert group["lr"] == pytest.approx(0.5 * estimate["alpha"]) and result.record.optimizer["class"] == "Adam"
    assert estimate["T"] == 3  # the theorem's horizon: this run's number of steps
    lr = result.record.lr
    assert (lr["source"], lr["estimate"], lr["lr"], lr["cached"]) == ("dds x0.5", estimate["alpha"], group["lr"], False)
    assert lr["cost_seconds"] > 0

    (tmp_path / "result.json").unlink()  # as if interrupted after the last checkpoint
    again = train(config, show_progress=False)
    assert json.loads((tmp_path / "stepsize.json").read_text()) == estimate
    assert again.record.optimizer["param_groups"][0]["lr"] == group["lr"]
    assert again.record.lr["cached"] and again.record.lr["cost_seconds"] == 0


@pytest.mark.parametrize("name", available_optimizers())
def test_every_registered_optimizer_trains_through_the_loop(tmp_path, name):
    args = {"lookahead": {"base": "adamw"}, "adam_dds": {"samples": 4}, "ldadam": {"rank": 2},
            "switch": {"phases": [{"name": "sgd"}, {"name": "adamw"}], "milestones": [1]}}.get(name, {})
    lr = 1e-3 if name != "dadapt_adam" else 1.0  # D-Adaptation takes lr as a multiplier of its own estimate
    result = train(tiny_config(tmp_path, optimizer=name, lr=lr, optimizer_args=args, steps=2, eval_limit=4),
                   show_progress=False)
    assert result.status == "done" and result.metrics["n_total"] == 4
