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
    from apigen_mt.pipeline import cli_data, cli_export, cli_models, cli_parse, cli_run  # noqa: F401
    from apigen_mt.pipeline.io import InputError, OutputError
    from apigen_mt.pipeline.signals import Stopped, install_stop_handlers
    from apigen_mt.simulators.strict_json import StrictJSONError

    install_stop_handlers()
    try:
        app()
    except (CliError, InputError, OutputError, StrictJSONError) as exc:
        print(f"apigen-mt: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except Stopped as exc:
        # The `with` blocks on the way up have removed their temp files.
        print(f"apigen-mt: {exc}; unfinished outputs were removed", file=sys.stderr)
        raise SystemExit(exc.status) from None
