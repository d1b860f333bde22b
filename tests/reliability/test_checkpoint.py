"""Checkpoints: nothing executes when one is loaded, a damaged one is detected by its manifest, and the run falls
back to the newest intact one."""

import logging
import os
import random

import numpy as np
import pytest
import torch

from adamlab.optim import create_optimizer
from adamlab.schedules import create_scheduler
from adamlab.training.checkpoint import (
    CheckpointError,
    checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


def tiny_setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    optimizer = create_optimizer("adabelief", model, lr=1e-2)
    scheduler = create_scheduler(optimizer, "cosine", 10, 2)
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, n):
    for _ in range(n):
        model(torch.randn(3, 4)).square().sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def save_at(out, steps, keep=3):
    model, optimizer, scheduler = tiny_setup()
    for step in steps:
        train_steps(model, optimizer, scheduler, 1)
        save_checkpoint(out, step, model, optimizer, scheduler, keep, {"elapsed": 1.0, "tokens_seen": step})
    return model, optimizer


def test_a_checkpoint_round_trips_weights_optimizer_and_every_rng(tmp_path):
    model, optimizer = save_at(tmp_path, [1, 2])
    expected = (random.random(), np.random.rand(), torch.rand(1))  # drawn right after the save
    restored, restored_optimizer, restored_scheduler = tiny_setup(seed=1)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = latest_checkpoint(tmp_path)
    state = load_checkpoint(path, restored, restored_optimizer, restored_scheduler)
    assert path.name == "step-00000002" and state["step"] == 2 and state["tokens_seen"] == 2
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    for a, b in zip(model.parameters(), restored.parameters()):
        assert torch.equal(a, b)
    assert str(restored_optimizer.state_dict()) == str(optimizer.state_dict())
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "state.pt", "trainable.safetensors"]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def plant_pickle(state_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = torch.load(state_file, weights_only=True)
    state["extra"] = Payload()
    torch.save(state, state_file)


def test_a_planted_pickle_never_executes(tmp_path, monkeypatch):
    save_at(tmp_path, [1])
    path = latest_checkpoint(tmp_path)
    plant_pickle(path / "state.pt", tmp_path, monkeypatch)
    assert verify_checkpoint(path) is not None  # the manifest catches the change...
    with pytest.raises(CheckpointError, match=r"state.pt is not a safe, intact checkpoint"):  # ...and so does loading
        load_checkpoint(path, *tiny_setup())
    assert not (tmp_path / "PWNED").exists()


def test_an_attacker_who_also_rewrites_the_manifest_still_executes_nothing(tmp_path, monkeypatch):
    from adamlab import atomic
    from adamlab.training.checkpoint import _file_digest

    save_at(tmp_path, [1])
    path = latest_checkpoint(tmp_path)
    plant_pickle(path / "state.pt", tmp_path, monkeypatch)
    manifest = atomic.read_json(path / "manifest.json")
    manifest["files"]["state.pt"] = _file_digest(path / "state.pt")
    atomic.write_json(path / "manifest.json", manifest)
    assert latest_checkpoint(tmp_path) == path
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, *tiny_setup())
    assert str(path / "state.pt") in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", ["truncate weights", "truncate state", "flip a byte", "no manifest",
                                    "torn manifest", "missing state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one_with_one_line(tmp_path, caplog, damage):
    save_at(tmp_path, [1, 2])
    latest = checkpoints(tmp_path)[-1]
    if damage == "truncate weights":
        (latest / "trainable.safetensors").write_bytes((latest / "trainable.safetensors").read_bytes()[:100])
    elif damage == "truncate state":
        (latest / "state.pt").write_bytes((latest / "state.pt").read_bytes()[:-50])
    elif damage == "flip a byte":
        data = bytearray((latest / "trainable.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (latest / "trainable.safetensors").write_bytes(bytes(data))
    elif damage == "no manifest":
        (latest / "manifest.json").unlink()
    elif damage == "torn manifest":
        (latest / "manifest.json").write_text('{"format": 1, "fi')
    else:
        (latest / "state.pt").unlink()
    with caplog.at_level(logging.WARNING):
        found = latest_checkpoint(tmp_path)
    assert found.name == "step-00000001"
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert str(latest) in caplog.records[0].getMessage() and "resuming from" in caplog.records[0].getMessage()
    assert load_checkpoint(found, *tiny_setup())["step"] == 1


def test_when_no_checkpoint_is_intact_the_run_is_not_silently_restarted(tmp_path):
    save_at(tmp_path, [1])
    (checkpoints(tmp_path)[0] / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*checkpoints is intact .*state.pt"):
        latest_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_garbage_weights_file_is_named_when_loaded(tmp_path):
    save_at(tmp_path, [1])
    path = latest_checkpoint(tmp_path)
    (path / "trainable.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"trainable.safetensors does not load"):
        load_checkpoint(path, *tiny_setup())


def test_a_partial_folder_left_by_a_kill_is_ignored(tmp_path):
    save_at(tmp_path, [1])
    (tmp_path / "checkpoints" / "step-00000002.partial").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
