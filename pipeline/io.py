"""Reading JSON / JSON Lines inputs with precise errors, and writing outputs atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """An input file is missing or malformed; the message names the file and, where it applies, the line."""


def read_records(path: Path) -> list[Any]:
    """A JSON array file, or JSON Lines (one value per non-blank line)."""
    text = _read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        if not isinstance(records, list):
            raise InputError(f"{path}: expected a JSON array or JSON Lines")
        return records
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {number} is not valid JSON (column {exc.colno}: {exc.msg})") from None
    if not records:
        raise InputError(f"{path}: no records found (expected JSON Lines or a JSON array)")
    return records


def read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError(f"input file {path} does not exist")
    if not path.is_file():
        raise InputError(f"input {path} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """Write to a temp file beside `path` and rename it into place only if the block succeeds."""
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
