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
    """List every registered optimizer: where it comes from, whether it is installed, its aliases, its algorithm.
    On a terminal a table that wraps to its width; piped, one tab-separated line per optimizer (nothing cut)."""
    rows = [(name, spec.source, "yes" if spec.installed else f"no: [{spec.extra}]", ", ".join(spec.aliases),
             spec.summary) for name, spec in sorted(registry.REGISTRY.items())]
    rows.append(("lookahead", "adamlab", "yes", "", "Lookahead(k, alpha) around any optimizer above (base=...)"))
    rows.append(("switch", "adamlab", "yes", "", "the optimizers above over step ranges (phases=..., milestones=...)"))
    console = Console()
    if not console.is_terminal:
        print("\t".join(("name", "source", "installed", "aliases", "algorithm")))
        for row in rows:
            print("\t".join(row))
        return
    # No borders, the name whole (aliases under it) and the algorithm wrapping: it reads at 80 columns.
    table = Table(title="adamlab optimizers", title_justify="left", box=None, pad_edge=False, header_style="bold")
    table.add_column("name", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("installed", no_wrap=True)
    table.add_column("algorithm", ratio=1)
    for name, source, installed, aliases, summary in rows:
        shown = f"{name}\n[dim]= {aliases}[/]" if aliases else name
        table.add_row(shown, source, installed if installed == "yes" else f"[yellow]{installed}[/]", summary)
    console.print(table)
    if any(not spec.installed for spec in registry.REGISTRY.values()):
        console.print("[dim]no: [EXTRA] means pip install 'adamlab[EXTRA]'[/]")


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
