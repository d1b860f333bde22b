"""Fault injection on `adamlab train`: kill -9 at a random step, SIGTERM, torn checkpoint / JSON / JSONL files and a
planted pickle. After each, running the same command again ends bit-identical to a run that was never disturbed:
nothing is lost, nothing executes, and every message is one line naming the file."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adamlab.training.checkpoint import checkpoints
from adamlab.training.telemetry import JsonlLog

STEPS = 12
FAULT_SEED = int(os.environ.get("ADAMLAB_FAULT_SEED", "14"))  # which steps the faults hit; any value must pass


def cli(out: Path, checkpoint_every: int = 3) -> list[str]:
    return [sys.executable, "-m", "adamlab", "train", "--model", "tiny-llama", "--task", "ag_news", "--out", str(out),
            "--steps", str(STEPS), "--checkpoint-every", str(checkpoint_every), "--batch-size", "4",
            "--train-limit", "32", "--eval-limit", "4", "--max-seq-len", "64", "--lora-r", "4", "--lora-alpha", "8",
            "--lr", "0.01", "--optimizer", "adabelief", "--schedule", "cosine", "--no-progress"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line, parse_constant=_not_json) for line in path.read_text().splitlines()]


def _not_json(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def trajectory(out: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"], r["update_norm"]) for r in read_jsonl(out / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    finished = subprocess.run(cli(out), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    return out


def assert_same_end(out: Path, reference: Path) -> None:
    assert trajectory(out) == trajectory(reference)
    weights, expected = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (out, reference))
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    assert json.loads((out / "result.json").read_text())["metrics"] == \
        json.loads((reference / "result.json").read_text())["metrics"]


def run_until_step(out: Path, step: int, checkpoint_every: int = 3) -> subprocess.Popen:
    """Start the run and return once ``metrics.jsonl`` records ``step``."""
    process = subprocess.Popen(cli(out, checkpoint_every), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    log = out / "metrics.jsonl"
    while not (log.is_file() and log.read_text().count("\n") >= step):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached the step"
        time.sleep(0.01)
    return process


def finish(out: Path, checkpoint_every: int = 3) -> subprocess.CompletedProcess:
    finished = subprocess.run(cli(out, checkpoint_every), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    return finished


def test_kill_9_at_a_random_step_loses_nothing(tmp_path, reference):
    step = random.Random(FAULT_SEED).randint(4, STEPS - 2)
    out = tmp_path / "run"
    process = run_until_step(out, step)
    process.kill()
    process.communicate()
    assert not (out / "adapter").exists(), "the run finished before the kill"
    finish(out)
    assert_same_end(out, reference)


def test_sigterm_checkpoints_the_current_step_and_stops(tmp_path, reference):
    step = random.Random(FAULT_SEED + 1).randint(2, STEPS - 3)
    out = tmp_path / "run"
    process = run_until_step(out, step, checkpoint_every=0)  # no periodic checkpoints: only SIGTERM's
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    stopped = json.loads((out / "result.json").read_text())
    assert stopped["status"] == "interrupted"
    assert [c.name for c in checkpoints(out)] == [f"step-{stopped['steps_completed']:08d}"]
    finish(out, checkpoint_every=0)
    assert_same_end(out, reference)


def test_torn_checkpoint_and_torn_log_line_after_a_kill(tmp_path, reference):
    out = tmp_path / "run"
    process = run_until_step(out, random.Random(FAULT_SEED + 2).randint(7, STEPS - 2))
    process.kill()
    process.communicate()
    latest = checkpoints(out)[-1]
    state = latest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a torn write
    with (out / "metrics.jsonl").open("a") as log:
        log.write('{"step": 99, "loss": 0.1')  # an append cut short
    resumed = finish(out)
    warnings = [line for line in resumed.stderr.splitlines() if "damaged checkpoint" in line]
    assert len(warnings) == 1 and str(state) in warnings[0] and "resuming from" in warnings[0]
    assert_same_end(out, reference)


def test_a_planted_pickle_in_a_run_folder_never_executes(tmp_path):
    out = tmp_path / "run"
    process = run_until_step(out, 4)  # one checkpoint, at step 3
    process.kill()
    process.communicate()
    marker = tmp_path / "PWNED"
    state = checkpoints(out)[-1] / "state.pt"
    payload = ("import os, torch\nclass P:\n    def __reduce__(self):\n"
               f"        return (os.system, ('touch {marker}',))\n"
               f"torch.save({{'step': 0, 'payload': P()}}, {str(state)!r})\n")
    subprocess.run([sys.executable, "-c", payload], check=True)
    refused = subprocess.run(cli(out), capture_output=True, text=True, timeout=300)
    assert not marker.exists()
    assert refused.returncode == 2  # the only checkpoint was altered: the run is not silently started over
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{state} does not match its checksum" in errors[0]


def test_a_torn_config_json_is_one_line_naming_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"model": "tiny-llama", "task": "ag_')
    refused = subprocess.run(cli(out), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert f"{out / 'config.json'} is damaged" in refused.stderr


def test_metrics_jsonl_is_strict_json(tmp_path):
    log = JsonlLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": 2.0, "grad_norm": math.inf})
    log.write({"step": 2, "loss": 1.5, "grad_norm": 0.5})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 2.0, "grad_norm": None, "nonfinite": {"grad_norm": "inf"}},
        {"step": 2, "loss": 1.5, "grad_norm": 0.5}]
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')
    resumed = JsonlLog(tmp_path / "metrics.jsonl", resume_step=2)
    assert [r["step"] for r in resumed.kept] == [1, 2]
    assert (tmp_path / "metrics.jsonl").read_text().endswith('"grad_norm": 0.5}\n')


def test_run_files_are_whole_strict_json(tmp_path):
    from adamlab.models import LoraSettings
    from adamlab.training import TrainConfig, train

    out = tmp_path / "run"
    train(TrainConfig(model="tiny-llama", task="ag_news", out=str(out), steps=2, batch_size=2, train_limit=4,
                      eval_limit=2, max_seq_len=64, lora=LoraSettings(r=2, alpha=4)), show_progress=False)
    for name in ("config.json", "result.json"):
        json.loads((out / name).read_text(), parse_constant=_not_json)
    for name in ("metrics.jsonl", "evals.jsonl", "predictions.jsonl"):
        assert read_jsonl(out / name)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
