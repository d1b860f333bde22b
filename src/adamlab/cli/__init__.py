"""The `adamlab` command line."""

from . import catalog, recommend, results, stepsize, study, train  # noqa: F401  (each registers its commands)
from .app import app


def main() -> None:
    app()
