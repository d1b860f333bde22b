"""A study small enough for tests: tiny-llama with LoRA on 32 AG News examples, 2 arms x 2 seeds, 3 steps."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

# Line numbers matter: the spec-error tests point at them.
TINY_SPEC = """\
name: tiny
description: two arms on a tiny random model
budget:
  search_space: one fixed learning rate per arm
  trials_per_arm: 3
models: [tiny-llama]
tasks: [ag_news]
seeds: [0, 1]
steps: 3
batch_size: 4
max_seq_len: 96
lora: {r: 4, alpha: 8}
train: {limit: 32, checkpoint_every: 1}
eval: {limit: 8, batch_size: 8}
lr: 1e-2
arms:
  - name: adam
    optimizer: adam
  - name: adamw-cosine
    optimizer: adamw
    hparams: {weight_decay: 0.01}
    schedules: [cosine]
"""

# Runs the CLI as a user would, with the study commands registered.
CLI = "import adamlab.cli.study; from adamlab.cli.app import app; app()"


def write_spec(folder: Path, text: str = TINY_SPEC, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def cli_process(*args: str, **popen) -> subprocess.Popen:
    """The CLI in a child process that a test can signal. Ctrl-C is restored to its default first: a test suite
    started in the background of a non-interactive shell (``make test &``) inherits SIGINT ignored, and so would
    the child, which then never sees the Ctrl-C the test sends."""
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)
