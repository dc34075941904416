"""Reading JSON / JSON Lines inputs strictly, with errors naming the file and line; the output writers.

Every input is strict JSON (see `simulators.strict_json`): no NaN or Infinity, no number that
overflows, nesting at most `MAX_DEPTH` deep. JSON Lines split on "\\n" only, because U+2028, U+2029
and U+0085, which `str.splitlines` also breaks on, are legal inside JSON strings. Outputs are written
by `pipeline.store.output`, re-exported here so that commands import their whole I/O from one module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from apigen_mt.pipeline.store.output import OutputError, atomic_directory, atomic_file, atomic_files_in, atomic_output
from apigen_mt.simulators.strict_json import MAX_DEPTH, StrictJSONError, dumps_strict, loads_strict

__all__ = [
    "MAX_DEPTH",
    "InputError",
    "OutputError",
    "atomic_directory",
    "atomic_file",
    "atomic_files_in",
    "atomic_output",
    "dumps_strict",
    "read_json",
    "read_records",
    "read_stdin",
    "split_json_lines",
]


class InputError(ValueError):
    """An input file is missing or malformed; the message names the file and, where it applies, the line."""


def read_records(path: Path) -> list[Any]:
    """A JSON array file, or JSON Lines (one value per non-blank line)."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        records = _loads(text, str(path))
        if not isinstance(records, list):
            raise InputError(f"{path}: expected a JSON array or JSON Lines")
        return records
    records = [_loads(line, f"{path}: line {number}") for number, line in split_json_lines(text)]
    if not records:
        raise InputError(f"{path}: no records found (expected JSON Lines or a JSON array)")
    return records


def read_json(path: Path) -> Any:
    """One JSON document."""
    return _loads(_read_text(path), str(path))


def split_json_lines(text: str) -> list[tuple[int, str]]:
    """The non-blank lines of JSON Lines text with their 1-based numbers, split on "\\n" only."""
    return [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def read_stdin() -> str:
    """All of standard input as UTF-8 text; InputError when it is closed, unreadable or not UTF-8."""
    if sys.stdin is None:  # started with stdin closed (`<&-`)
        raise InputError("standard input is closed; pipe the input in, e.g. `... | apigen-mt parse`")
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read standard input: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"standard input is not UTF-8 (byte {exc.start}: {exc.reason})") from None


def _loads(text: str, where: str) -> Any:
    try:
        return loads_strict(text, where)
    except StrictJSONError as exc:
        raise InputError(str(exc)) from None


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError(f"input file {path} does not exist")
    if not path.is_file():
        raise InputError(f"input {path} is not a file")
    try:
        # Bytes, not read_text: universal newlines would turn a lone "\r" (JSON whitespace) into a line break.
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
