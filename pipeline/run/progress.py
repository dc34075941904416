"""A live progress bar on stderr with the running funnel: trials done, accepted, rejected, failed, retried.

Where stderr is not a terminal (a log file, `ray job logs`) a bar cannot redraw itself; a plain line with
the same numbers is printed instead, at most every `PLAIN_EVERY_S` seconds, and once at the end.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_S = 30.0


class FunnelProgress:
    """`with FunnelProgress(total) as bar: bar.finished("accepted")`; silent when disabled."""

    def __init__(self, total: int, *, enabled: bool = True, label: str = "trials") -> None:
        self.counts: Counter[str] = Counter()
        self.label = label
        self.total = total
        self._started = self._last_line = time.monotonic()
        console = Console(stderr=True)
        self._plain = enabled and not console.is_terminal
        self._printed = ""
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[funnel]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled or self._plain,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, funnel=self._funnel())

    def _funnel(self) -> str:
        c = self.counts
        text = f"accepted {c['accepted']} | rejected {c['rejected']} | failed {c['failed']}"
        return text + (f" | retried {c['retried']}" if c["retried"] else "")

    def __enter__(self) -> FunnelProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()
        self._line()

    def finished(self, status: str) -> None:
        self.counts[status] += 1
        self._progress.update(self._task, advance=1, funnel=self._funnel())
        if time.monotonic() - self._last_line >= PLAIN_EVERY_S:
            self._line()

    def _line(self) -> None:
        if not self._plain:
            return
        self._last_line = time.monotonic()
        done = sum(self.counts[status] for status in ("accepted", "rejected", "failed"))
        state = f"{self.label} {done}/{self.total}: {self._funnel()}"
        if state == self._printed:  # the end of a run whose last line already says it all
            return
        self._printed = state
        elapsed = int(self._last_line - self._started)
        print(f"{state} ({elapsed // 60}m{elapsed % 60:02d}s)", file=sys.stderr)

    def retried(self) -> None:
        self.counts["retried"] += 1
        self._progress.update(self._task, funnel=self._funnel())
