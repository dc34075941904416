"""The `apigen-mt` command group and what its command modules share: the error type and the export report.

Every `cli_*` module registers its commands on `app` and imports nothing from another command module;
`pipeline/cli/main.py` imports them all and runs the group.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click
import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from apigen_mt.pipeline.export.dataset import ExportResult

# `apigen-mt --help` lists the commands in these panels, in this order: the main job first.
MAIN_JOB = "The main job"
CHECKS = "Checks and replays (no model)"
SETUP = "Environments and models"
COMMAND_ORDER = (
    "generate",
    "trajectories",
    "eval",
    "blueprints",
    "export",
    "view",
    "replay",
    "validate",
    "verify",
    "parse",
    "envs",
    "models",
)


class _OrderedGroup(TyperGroup):
    """Lists the commands in `COMMAND_ORDER` whatever order their modules registered them in."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        def rank(name: str) -> int:
            return COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(COMMAND_ORDER)

        return sorted(super().list_commands(ctx), key=rank)


app = typer.Typer(
    cls=_OrderedGroup,
    name="apigen-mt",
    help="Synthetic multi-turn tool-use data: blueprints, simulated conversations, verified trajectories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Synthetic multi-turn tool-use data: blueprints, simulated conversations, verified trajectories."""
    # A callback keeps `apigen-mt` a command group however few command modules have registered on `app`.


class CliError(Exception):
    """Bad input from the user: printed as one line on stderr, exit status 2."""


def report_export(result: ExportResult, splits: Sequence[str], mirrored_to: str | None = None) -> None:
    """What an export wrote, on stderr (printed as is: paths may contain brackets rich would take for markup)."""
    rows = ", ".join(f"{name} {count}" for name, count in result.rows.items() if name in splits)
    print(f"exported {rows} rows", file=sys.stderr)
    for note in result.notes():  # the trials in no split, and a run without trials
        print(f"  {note}", file=sys.stderr)
    for format_, folder in result.datasets.items():
        print(f"  {format_}: {folder} (load_from_disk), {result.run_dir / 'data' / format_} (Parquet)", file=sys.stderr)
    print(f"  card: {result.card}", file=sys.stderr)
    if mirrored_to is not None:
        print(f"  mirrored to {mirrored_to}", file=sys.stderr)
    if result.pushed_to:
        print(f"  pushed to the Hugging Face Hub dataset {result.pushed_to}", file=sys.stderr)
