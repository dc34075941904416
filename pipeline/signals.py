"""SIGINT, SIGTERM and SIGHUP stop a command the same way: as an exception, so every `with` block cleans up.

Python turns only SIGINT into an exception (KeyboardInterrupt); SIGTERM and SIGHUP kill the process
outright and leave temp files behind. `install_stop_handlers` makes all three raise `Stopped`, a
BaseException so that no `except Exception` in between swallows it; the CLI exits with 128 + signal.
A few steps must not be cut in half (renaming a set of files into place): `signals_deferred` holds a
signal back until its block ends.
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


def _stop(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    raise Stopped(signum)


def install_stop_handlers() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread (call once, from the main thread)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


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
            raise Stopped(signum)
