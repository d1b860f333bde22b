import typer

app = typer.Typer(
    name="adamlab",
    help="Which optimizer and which step size to fine-tune an LLM with, and the evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
