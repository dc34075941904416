"""A live progress bar on stderr with the running funnel: trials done, accepted, rejected, failed, retried."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class FunnelProgress:
    """`with FunnelProgress(total) as bar: bar.finished("accepted")`; silent when disabled."""

    def __init__(self, total: int, *, enabled: bool = True, label: str = "trials") -> None:
        self.counts: Counter[str] = Counter()
        self.label = label
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[funnel]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
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

    def finished(self, status: str) -> None:
        self.counts[status] += 1
        self._progress.update(self._task, advance=1, funnel=self._funnel())

    def retried(self) -> None:
        self.counts["retried"] += 1
        self._progress.update(self._task, funnel=self._funnel())
