"""The `apigen-mt` command: every command module registered on the group (`cli_app.app`), and the entry point
that turns expected failures into one line on stderr."""

from __future__ import annotations

import sys

# Imported for their commands; `apigen-mt --help` lists them in cli_app.COMMAND_ORDER.
from apigen_mt.pipeline import cli_data, cli_export, cli_models, cli_parse, cli_run  # noqa: F401
from apigen_mt.pipeline.cli_app import CliError, app

__all__ = ["CliError", "app", "main"]


def main() -> None:
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
