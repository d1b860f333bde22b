"""What adamlab prints while it works, and what it keeps other libraries from printing.

``phase("loading minilm")`` shows a status line for a step that has no progress bar of its own (model loading,
evaluation): a spinner on a terminal, above a running progress bar if there is one, and a plain line on stderr when
the output is piped. ``quiet_libraries()`` (the CLI calls it first) silences third-party output that tells the user
nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from rich import get_console
from rich.errors import LiveError
from transformers.utils import logging as hf_logging

# Loggers that warn about optional kernels adamlab never uses (bitsandbytes' CPU 4-bit path wants `kernels`).
QUIET_LOGGERS = ("bitsandbytes",)

__all__ = ["QUIET_LOGGERS", "phase", "quiet_libraries"]


def quiet_libraries() -> None:
    """transformers' progress bars ("Loading weights", "Writing model shards") would cut through adamlab's own
    progress and status lines, so they are off; warnings and errors still show."""
    hf_logging.disable_progress_bar()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def phase(message: str, enabled: bool = True) -> Iterator[None]:
    """A status line for the duration of the block."""
    if not enabled:
        yield
        return
    console = get_console()  # the console rich's progress bars draw on
    if not console.is_terminal:
        print(f"{message} ...", file=sys.stderr, flush=True)
        yield
        return
    try:
        spinner = console.status(message)
        spinner.start()
    except LiveError:  # a progress bar is live: one line above it instead
        console.print(f"[dim]{message} ...[/]")
        yield
        return
    try:
        yield
    finally:
        spinner.stop()
