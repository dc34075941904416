"""The `apigen-mt` command: every command module registered on the group (`pipeline.cli.app`), and the entry point
that turns expected failures, and the warnings of renamed names, into one line on stderr."""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

# Imported for their commands; `apigen-mt --help` lists them in `pipeline.cli.app.COMMAND_ORDER`.
from apigen_mt.pipeline.cli import data, eval, export, models, parse, run, view  # noqa: F401
from apigen_mt.pipeline.cli.app import CliError, app
from apigen_mt.pipeline.renamed import RenamedWarning

__all__ = ["CliError", "app", "main"]


def main() -> None:
    from apigen_mt.pipeline.signals import Stopped, install_stop_handlers
    from apigen_mt.pipeline.store.io import InputError, OutputError
    from apigen_mt.simulators.strict_json import StrictJSONError

    install_stop_handlers()
    warnings.showwarning = _show_warning
    try:
        app()
    except (CliError, InputError, OutputError, StrictJSONError) as exc:
        print(f"apigen-mt: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except Stopped as exc:
        # The `with` blocks on the way up have removed their temp files.
        print(f"apigen-mt: {exc}; unfinished outputs were removed", file=sys.stderr)
        raise SystemExit(exc.status) from None


_python_show_warning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A renamed config key or option is one line, as an error is; any other warning as Python shows it."""
    if issubclass(category, RenamedWarning):
        print(f"apigen-mt: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)
