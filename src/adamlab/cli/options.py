"""Helpers shared by the commands: KEY=VALUE options, LoRA options and the exit-2 policy for bad input."""

from __future__ import annotations

import ast
import contextlib
import sys
from collections.abc import Iterator

import typer

from ..models import LoraSettings, ModelNotAvailableError
from ..optim.registry import MissingDependencyError
from ..tasks.base import DataError

BAD_INPUT = (ValueError, FileNotFoundError, ModelNotAvailableError, MissingDependencyError, DataError)


def parse_pairs(pairs: list[str] | None, option: str) -> dict:
    """``["weight_decay=0.01", "betas=(0.9, 0.95)"]`` -> ``{"weight_decay": 0.01, "betas": (0.9, 0.95)}``.
    Values are Python literals where they parse as one (``true``/``false`` too, as in YAML: otherwise the string
    "false" would be a truthy flag), strings otherwise."""
    out = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            value = {"true": True, "false": False}.get(raw.strip().lower()) if raw.strip().lower() in (
                "true", "false") else ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        out[key.strip()] = value
    return out


def lora_settings(lora: str, r: int, alpha: int, dropout: float, targets: list[str] | None) -> LoraSettings | None:
    """The --lora, --lora-r, --lora-alpha, --lora-dropout and --lora-targets options as settings (None: no LoRA)."""
    if lora == "none":
        return None
    if lora != "lora":
        raise ValueError(f"--lora must be 'lora' or 'none', got {lora!r}")
    return LoraSettings(r=r, alpha=alpha, dropout=dropout, targets=tuple(targets) if targets else None)


@contextlib.contextmanager
def bad_input_exits_2() -> Iterator[None]:
    """Bad input ends the command with exit code 2 and a one-line reason, never a traceback."""
    try:
        yield
    except BAD_INPUT as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        raise typer.Exit(2) from None
