"""The `apigen-mt` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="apigen-mt",
    help="Synthetic multi-turn tool-use data: blueprints, simulated conversations, verified trajectories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Synthetic multi-turn tool-use data: blueprints, simulated conversations, verified trajectories."""
    # A callback keeps `apigen-mt` a command group however few commands a test has registered.


class CliError(Exception):
    """Bad input from the user: printed as one line on stderr, exit status 2."""


def main() -> None:
    # Each module registers its commands on `app`.
    from apigen_mt.pipeline import cli_data, cli_models, cli_parse  # noqa: F401

    try:
        app()
    except CliError as exc:
        print(f"apigen-mt: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
