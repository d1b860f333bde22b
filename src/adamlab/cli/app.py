from typing import Annotated

import typer

from .. import __version__
from ..console import quiet_libraries

app = typer.Typer(
    name="adamlab",
    help="Which optimizer and which step size to fine-tune an LLM with, and the evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"adamlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print adamlab's version and exit")] = False,
) -> None:
    """Which optimizer and which step size to fine-tune an LLM with, and the evidence."""
    quiet_libraries()
