"""SIGINT, SIGTERM and SIGHUP stop a command the same way: as an exception, so every `with` block cleans up.

Python turns only SIGINT into an exception (KeyboardInterrupt); SIGTERM and SIGHUP kill the process
outright and leave temp files behind. `install_stop_handlers` makes all three raise `Stopped`, a
BaseException so that no `except Exception` in between swallows it; the CLI exits with 128 + signal.
A few steps must not be cut in half (renaming a set of files into place): `signals_deferred` holds a
signal back until its block ends. Once a stop signal has raised `Stopped`, further ones are ignored, so that
the cleanup on the way out (a Ray cluster shutting down, a shard being written) is not cut short by a second
Ctrl-C; SIGKILL still ends the process, and the shards' journals keep every finished row even then. A library
that replaces the handlers (ray.init does) is wrapped in `stop_handlers_kept`.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The process received a stop signal; `status` is the conventional exit status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


_deferring = 0
_pending: int | None = None
_stopping = False  # a stop signal has raised Stopped


def _stop(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _stopping:
        return
    if _deferring:
        _pending = signum
        return
    _raise_stopped(signum)


def _raise_stopped(signum: int) -> None:
    global _stopping
    _stopping = True
    raise Stopped(signum)


def install_stop_handlers() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread (call from the main thread)."""
    global _stopping
    _stopping = False
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


@contextlib.contextmanager
def stop_handlers_kept() -> Iterator[None]:
    """Put the stop signals' handlers back as they were before the block, whatever it installed in their place
    (from Python, or at the C level where Python cannot see them). Call from the main thread."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: installed outside Python before the block, which cannot be put back
                signal.signal(signum, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold stop signals back during the block, then raise the last one that arrived."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            _raise_stopped(signum)
