"""The one way outputs are written: complete or not at all, never over an input, never over a device.

A regular-file output is written to a temp file beside it and renamed into place only when the block
succeeds; a failure or a stop signal (see `signals`) removes the temp file and leaves any earlier output
as it was. A character device or FIFO (`/dev/null`, `/dev/stdout` on a pipe) is written to directly,
since it cannot be replaced. Temp names are short and fixed-length (`.apigen-<8 hex>.tmp`) so that any
legal output name stays legal; a writer killed (SIGKILL) before its cleanup leaves them behind, and
`remove_stale_temps` clears them where no other writer can be at work. Every failure is an `OutputError`
naming the path and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from apigen_mt.pipeline.signals import signals_deferred

# Errors of writing that belong to the output (the disk, the device), as opposed to bugs in the caller.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EPIPE}


class OutputError(Exception):
    """An output cannot be written where it was asked for; the message names the path and the reason."""


_TEMP_NAME = re.compile(r"\.apigen-[0-9a-f]{8}\.tmp")


def temp_name() -> str:
    return f".apigen-{secrets.token_hex(4)}.tmp"


def remove_stale_temps(folder: Path) -> None:
    """Remove the temp files and folders (`temp_name`) that killed writers left in `folder`. Only for a folder
    no other process writes at the same time (one whose run lock is held): a live writer's temps look the same."""
    for path in folder.iterdir():
        if _TEMP_NAME.fullmatch(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: Path, *, inputs: Sequence[Path] = (), binary: bool = False) -> Iterator[IO]:
    """An open handle (text, UTF-8, or binary) whose content becomes `path` only if the block succeeds."""
    status = _target_status(path, inputs)
    if status is not None and _is_stream(status):
        with _open(path, path, binary=binary, regular=False) as handle:
            yield handle
        return
    with _temp_file(_real(path), path) as tmp, _open(tmp, path, binary=binary, regular=True) as handle:
        yield handle


@contextlib.contextmanager
def atomic_file(path: Path, *, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """A temp path beside `path` for a writer that opens files itself (pyarrow); renamed into place on success."""
    status = _target_status(path, inputs)
    if status is not None and _is_stream(status):
        raise OutputError(f"output {path} is a device or pipe; this output must be a regular file")
    with _temp_file(_real(path), path) as tmp:
        yield tmp
        _fsync(tmp, path)


@contextlib.contextmanager
def atomic_directory(path: Path, *, inputs: Sequence[Path] = (), replace: bool = False) -> Iterator[Path]:
    """A temp folder beside `path`, moved into place when the block succeeds.

    An existing non-empty `path` is refused unless `replace`; then the old folder is swapped out only
    once the new one is complete, and removed.
    """
    _refuse_inputs_within(path, inputs)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} exists and is not a folder; give a folder path")
    if path.is_dir() and not replace and any(path.iterdir()):
        raise OutputError(f"output folder {path} exists and is not empty; remove it or choose another folder")
    parent = _make_parent(path)
    tmp = parent / temp_name()
    try:
        os.mkdir(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: cannot create a folder in {parent}: {_reason(exc)}") from None
    old = None
    try:
        yield tmp
        with signals_deferred():
            old = _replace_entries(parent, {path.name: tmp})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_entries(folder: Path, names: Sequence[str]) -> Iterator[Path]:
    """A temp folder inside the existing `folder`, for the block to write entries (files or folders) of `names`.

    When the block succeeds, each of `names` in `folder` becomes the temp folder's entry of that name, or is
    removed when the block wrote none: all in one step with stop signals held back, so that `folder` holds
    the earlier outputs or the new ones, never a mix. Other entries of `folder` stay.
    """
    tmp = folder / temp_name()
    try:
        os.mkdir(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {_reason(exc)}") from None
    old = None
    try:
        yield tmp
        written = {name: tmp / name if os.path.lexists(tmp / name) else None for name in names}
        with signals_deferred():
            old = _replace_entries(folder, written)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:  # removed after the swap: a large old output must not hold a stop signal back
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_files_in(folder: Path, names: Sequence[str], *, replace: bool = False) -> Iterator[Path]:
    """A temp folder inside `folder` to write the files `names` into; all are renamed into `folder` together.

    Other files in `folder` stay. Any of `names` already in `folder` is refused unless `replace`. The
    renames run after every file is complete, with stop signals held back, so the folder never holds
    a mix of old and new files.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} exists and is not a folder; give a folder path")
    existing = [name for name in names if os.path.lexists(folder / name)]
    folders = [name for name in existing if (folder / name).is_dir()]
    if folders:
        # Checked now: a rename failing half-way through would leave a mix of old and new files.
        raise OutputError(
            f"output folder {folder} holds a folder named {folders[0]}, where a file must go; move it away"
        )
    if existing and not replace:
        raise OutputError(
            f"output folder {folder} already holds {', '.join(existing)}; choose another folder or replace them"
        )
    created = not folder.exists()
    _make_parent(folder / names[0], folder)
    tmp = folder / temp_name()
    try:
        os.mkdir(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {_reason(exc)}") from None
    try:
        yield tmp
        for name in names:
            _fsync(tmp / name, folder / name)
        with signals_deferred():
            for name in names:
                _rename(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _target_status(path: Path, inputs: Sequence[Path]) -> os.stat_result | None:
    """Checks common to every file output; the status of the existing target (links followed), or None."""
    _refuse_inputs(path, inputs)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise OutputError(f"cannot write {path}: {_file_ancestor(path)} is a file, not a folder") from None
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    if stat.S_ISDIR(status.st_mode):
        raise OutputError(f"output {path} is a folder; give a file path")
    if not (stat.S_ISREG(status.st_mode) or _is_stream(status)):
        raise OutputError(f"output {path} is neither a regular file nor a character device or FIFO; give a file path")
    return status


def _is_stream(status: os.stat_result) -> bool:
    return stat.S_ISCHR(status.st_mode) or stat.S_ISFIFO(status.st_mode)


def _refuse_inputs(path: Path, inputs: Sequence[Path]) -> None:
    """An output that is one of the command's inputs (same resolved path, or same inode: a hard link) is refused."""
    resolved = path.resolve()
    try:
        status = os.stat(path)
    except OSError:
        status = None
    for source in inputs:
        same = source.resolve() == resolved
        if not same and status is not None:
            with contextlib.suppress(OSError):
                other = os.stat(source)
                same = (other.st_dev, other.st_ino) == (status.st_dev, status.st_ino)
        if same:
            raise OutputError(f"output {path} is also an input of this command ({source}); write the output elsewhere")


def _refuse_inputs_within(folder: Path, inputs: Sequence[Path]) -> None:
    """A folder output may replace everything below it, so no input may be there."""
    resolved = folder.resolve()
    for source in inputs:
        if source.resolve().is_relative_to(resolved):
            raise OutputError(
                f"output folder {folder} holds an input of this command ({source}); write the output elsewhere"
            )


def _real(path: Path) -> Path:
    """The file a (possibly symlinked) path names: writing through a link replaces its target, not the link."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def _open(file: Path, shown: Path, *, binary: bool, regular: bool) -> Iterator[IO]:
    """`file` opened for writing; errors of the disk or device (at write, flush or close) become OutputError."""
    try:
        handle = open(file, "wb" if binary else "w", encoding=None if binary else "utf-8")  # noqa: SIM115
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {_reason(exc)}") from None
    try:
        with handle:
            yield handle
            handle.flush()
            if regular:  # devices and pipes cannot be synced
                os.fsync(handle.fileno())
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        raise OutputError(f"cannot write {shown}: {_reason(exc)}") from None


@contextlib.contextmanager
def _temp_file(target: Path, shown: Path) -> Iterator[Path]:
    """A new empty temp file in `target`'s folder (mode from the umask), renamed onto `target` after the block."""
    parent = _make_parent(target, shown)
    while True:
        tmp = parent / temp_name()
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {shown}: cannot create a file in {parent}: {_reason(exc)}") from None
    try:
        yield tmp
        _rename(tmp, target, shown)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _make_parent(path: Path, shown: Path | None = None) -> Path:
    shown = shown or path
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot write {shown}: {_file_ancestor(path)} is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: cannot create the folder {parent}: {_reason(exc)}") from None
    return parent


def _file_ancestor(path: Path) -> Path:
    """The nearest existing ancestor of `path`, which is a file when a folder was expected."""
    for ancestor in path.parents:
        if os.path.lexists(ancestor):
            return ancestor
    return path.parent


def _fsync(path: Path, shown: Path) -> None:
    """Flush a finished file to disk before the rename that publishes it."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {_reason(exc)}") from None


def _rename(source: Path, target: Path, shown: Path | None = None) -> None:
    try:
        os.replace(source, target)
    except OSError as exc:
        raise OutputError(f"cannot write {shown or target}: {_reason(exc)}") from None


def _replace_entries(folder: Path, entries: Mapping[str, Path | None]) -> Path:
    """Put each entry at `folder/name` (None: no entry of that name), all or none: the entries there are moved
    aside into a new temp folder first, which is returned for the caller to delete; a failed rename puts every
    entry back where it was."""
    old = folder / temp_name()
    try:
        os.mkdir(old)
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {_reason(exc)}") from None
    moved: list[str] = []
    placed: list[tuple[str, Path]] = []
    try:
        for name in entries:
            if os.path.lexists(folder / name):
                _rename(folder / name, old / name)
                moved.append(name)
        for name, new in entries.items():
            if new is not None:
                _rename(new, folder / name)
                placed.append((name, new))
    except OutputError:
        for name, new in placed:
            os.replace(folder / name, new)
        for name in moved:
            os.replace(old / name, folder / name)
        shutil.rmtree(old, ignore_errors=True)
        raise
    return old


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
