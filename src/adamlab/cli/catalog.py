"""`adamlab optimizers` and `adamlab schedules`: what the registry offers."""

from rich.console import Console
from rich.table import Table

from ..optim import registry
from ..schedules import available_schedules
from .app import app


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
