"""`adamlab optimizers`, `schedules`, `studies` and `init`: what adamlab offers, and a bundled study to edit."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..optim import registry
from ..schedules import available_schedules
from ..studies.bundled import bundled_studies, copy_study, study_description
from .app import app
from .options import bad_input_exits_2


@app.command()
def optimizers() -> None:
    """List every registered optimizer: where it comes from, whether it is installed, and its aliases."""
    table = Table(title="adamlab optimizers", title_justify="left")
    for column in ("name", "source", "installed", "aliases", "algorithm"):
        table.add_column(column, no_wrap=column != "algorithm")
    for name, spec in sorted(registry.REGISTRY.items()):
        installed = "yes" if spec.installed else f"[yellow]pip install 'adamlab[{spec.extra}]'[/]"
        table.add_row(name, spec.source, installed, ", ".join(spec.aliases), spec.summary)
    table.add_row("lookahead", "adamlab", "yes", "", "Lookahead(k, alpha) around any optimizer above (base=...)")
    table.add_row("switch", "adamlab", "yes", "", "the optimizers above over step ranges (phases=..., milestones=...)")
    Console().print(table)


@app.command()
def schedules() -> None:
    """List the learning-rate schedules (each also takes warmup_steps)."""
    Console().print("\n".join(available_schedules()))


@app.command()
def studies() -> None:
    """List the bundled studies: run one by name (`adamlab sweep demo`), or copy it to edit (`adamlab init demo`)."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("what it compares")
    for name, path in bundled_studies().items():
        table.add_row(name, study_description(path))
    Console().print(table)


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="a bundled study (`adamlab studies`)")],
    out: Annotated[Path | None, typer.Option(help="where to write it (a file or a folder; default ./NAME.yaml)")] = None,
) -> None:
    """Copy a bundled study spec into your folder to edit; then `adamlab validate` and `adamlab sweep` it."""
    with bad_input_exits_2():
        written = copy_study(name, out)
    print(f"wrote {written}: edit it, then `adamlab validate {written}` and `adamlab sweep {written}`")
