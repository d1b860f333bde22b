"""Checkpoints that resume exactly: trainable weights, optimizer, scheduler, every RNG, and the step (which fixes
the position in the data).

Run folders get shared (cluster storage, downloaded studies), so loading one must never execute code, and a
checkpoint damaged on disk must not strand the run:

* the weights are safetensors; everything else (``state.pt``) holds only tensors and plain Python values and is
  read with ``torch.load(weights_only=True)``, which refuses any pickled object that is not on torch's allow-list
  (the NumPy RNG state is stored as a tensor for that reason);
* each checkpoint is written into a ``.partial`` folder, a ``manifest.json`` with every file's size and SHA-256
  written last, and only then renamed into place;
* ``latest_checkpoint`` returns the newest checkpoint whose files match their manifest, saying in one line which
  newer ones it skipped and why, so a run whose last checkpoint was torn goes on from the one before.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import CorruptFileError, dumps, read_json

PREFIX = "step-"
MANIFEST = "manifest.json"
WEIGHTS = "trainable.safetensors"
STATE = "state.pt"
FORMAT = 1

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def rng_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        # As a tensor and plain numbers: a NumPy array would need NumPy's unpickler, which weights_only refuses.
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                  "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out_dir: Path) -> list[Path]:
    folder = out_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit())


def _file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def verify_checkpoint(path: Path) -> str | None:
    """``None`` when every file of the checkpoint matches its manifest, else why not (one line naming the file)."""
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        return f"{manifest_file} is missing (the checkpoint was cut short, or written by an older adamlab)"
    try:
        manifest = read_json(manifest_file)
        files = manifest["files"]
    except (CorruptFileError, KeyError, TypeError) as error:
        return f"{manifest_file} is damaged ({error})"
    for name in (WEIGHTS, STATE):
        file = path / name
        if name not in files:
            return f"{manifest_file} does not list {name}"
        if not file.is_file():
            return f"{file} is missing"
        if _file_digest(file) != files[name]:
            return f"{file} does not match its checksum in {MANIFEST} (truncated or altered)"
    return None


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; ``None`` when there is none at all. Damaged newer ones are skipped with a
    warning (they stay on disk, and are overwritten when the run reaches their step again). Raises
    ``CheckpointError`` when checkpoints exist but none verifies: starting over would discard the run silently."""
    found = checkpoints(out_dir)
    problems = []
    for path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            if problems:
                logger.warning("skipping damaged checkpoint%s: %s; resuming from %s",
                               "s" if len(problems) > 1 else "", "; ".join(problems), path)
            return path
        problems.append(problem)
    if found:
        raise CheckpointError(f"no checkpoint in {out_dir / 'checkpoints'} is intact ({problems[0]}); "
                              "delete that folder to start the run over")
    return None


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, keep: int, extra: dict[str, Any]) -> Path:
    final = out_dir / "checkpoints" / f"{PREFIX}{step:08d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, partial / WEIGHTS)
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
         **extra},
        partial / STATE,
    )
    # Written last: a checkpoint with a manifest that verifies was written completely. Nothing is fsynced: a power
    # cut that loses part of the newest checkpoint shows as a checksum mismatch (or leaves it named .partial) and
    # the run resumes from the one before, so the price of syncing (a pause per checkpoint while the disk's journal
    # commits) buys nothing.
    manifest = {"format": FORMAT, "step": step,
                "files": {name: _file_digest(partial / name) for name in (WEIGHTS, STATE)}}
    (partial / MANIFEST).write_text(dumps(manifest))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore everything saved at ``path`` into the live objects; returns the saved state (step, extras). Nothing
    in the checkpoint can execute code; a file that does not load raises ``CheckpointError`` naming it."""
    try:
        trainable = load_file(path / WEIGHTS)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path / WEIGHTS} does not load: {error}") from None
    params = dict(model.named_parameters())
    missing = sorted(set(trainable) ^ {n for n, p in params.items() if p.requires_grad})
    if missing:
        raise CheckpointError(f"checkpoint {path} does not match the model's trainable parameters: {missing[:5]}")
    try:
        state = torch.load(path / STATE, weights_only=True, map_location="cpu")
    except Exception as error:  # UnpicklingError (a refused object), RuntimeError (a damaged zip), EOFError, OSError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path / STATE} is not a safe, intact checkpoint: {reason}") from None
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
