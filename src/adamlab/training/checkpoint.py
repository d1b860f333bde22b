"""Checkpoints that resume exactly: trainable weights, optimizer, scheduler, every RNG, and the step (which fixes
the position in the data). Written to a temporary folder and renamed, so a kill never leaves a broken one."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out_dir: Path) -> list[Path]:
    folder = out_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit())


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, keep: int, extra: dict[str, Any]) -> Path:
    final = out_dir / "checkpoints" / f"{PREFIX}{step:08d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, partial / "trainable.safetensors")
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
         **extra},
        partial / "state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore everything saved at ``path`` into the live objects; returns the saved state (step, extras)."""
    trainable = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = sorted(set(trainable) ^ {n for n, p in params.items() if p.requires_grad})
    if missing:
        raise ValueError(f"checkpoint {path} does not match the model's trainable parameters: {missing[:5]}")
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
