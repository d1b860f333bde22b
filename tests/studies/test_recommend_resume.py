"""Continuation and resumption: a paused trial continues bit-identically, a killed recommendation resumes without
redoing finished rungs, and the Ray executor recommends what the local one does."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adamlab.studies.recommend import RUNS_FILE, read_runs, recommend
from adamlab.training import TrainConfig, train

from .recommend_helpers import tiny_settings, write_sentiment


def _config(out: Path, data: Path, stop_at: int | None = None) -> TrainConfig:
    return TrainConfig(model="tiny-llama", task="sst2", out=str(out), optimizer="adamw", lr=3e-3, schedule="cosine",
                       warmup_steps=2, steps=8, stop_at=stop_at, batch_size=8, max_seq_len=48, lora=None,
                       train_source=str(data), eval_source=str(data), eval_limit=20, checkpoint_every=100)


def test_a_paused_trial_continues_bit_identically(tmp_path):
    data = write_sentiment(tmp_path / "data.jsonl", 120, seed=0)
    straight = train(_config(tmp_path / "straight", data), show_progress=False)
    paused = train(_config(tmp_path / "halving", data, stop_at=3), show_progress=False)
    assert paused.status == "paused" and paused.steps_completed == 3 and "accuracy" in paused.metrics
    continued = train(_config(tmp_path / "halving", data, stop_at=None), show_progress=False)
    assert continued.status == straight.status == "done" and continued.steps_completed == 8

    def steps(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = steps(tmp_path / "straight"), steps(tmp_path / "halving")
    assert [(s["step"], s["loss"], s["lr"]) for s in a] == [(s["step"], s["loss"], s["lr"]) for s in b]
    final = "model/model.safetensors"  # the trained weights each run saves at its end
    weights_a, weights_b = load_file(tmp_path / "straight" / final), load_file(tmp_path / "halving" / final)
    assert all(weights_a[name].equal(weights_b[name]) for name in weights_a)
    assert continued.metrics == straight.metrics


RUNNER = """
import sys
from tests.studies.recommend_helpers import tiny_settings
from adamlab.studies.recommend import recommend
from pathlib import Path
recommend(tiny_settings(Path(sys.argv[1])))
"""


def test_kill_9_mid_recommend_then_rerun_keeps_finished_rungs(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path)], env=env, cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs_file = tmp_path / "rec" / RUNS_FILE
    deadline = time.time() + 240
    recorded = 0
    while time.time() < deadline and process.poll() is None:
        if runs_file.exists():
            with sqlite3.connect(runs_file) as db:
                try:
                    recorded = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                except sqlite3.OperationalError:
                    recorded = 0
            if recorded >= 2:
                break
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {(r.trial, r.step): r.recorded for r in read_runs(tmp_path / "rec")}
    assert len(before) >= 2

    result = recommend(tiny_settings(tmp_path))
    after = {(r.trial, r.step): r.recorded for r in read_runs(tmp_path / "rec")}
    assert all(after[key] == stamp for key, stamp in before.items())  # finished runs were not run again
    assert (tmp_path / "rec" / "recommendation.json").is_file() and result["optimizer"]


def test_ray_executor_recommends_what_local_does(tmp_path):
    pytest.importorskip("ray")
    local = recommend(tiny_settings(tmp_path, out="local", budget=1.0, lrs={"adamw": [3e-3, 1e-2], "lion": [3e-3]}))
    distributed = recommend(tiny_settings(tmp_path, out="ray", budget=1.0, lrs={"adamw": [3e-3, 1e-2], "lion": [3e-3]},
                                          executor="ray", workers=2))
    for key in ("optimizer", "lr", "schedule", "dev", "test", "p_best", "delta_vs_baseline"):
        assert distributed[key] == local[key], key
    assert distributed["cost"]["trial_steps"] == local["cost"]["trial_steps"]
