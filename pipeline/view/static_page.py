"""`apigen-mt view RUN_DIR --static FILE.html`: the overview and a sample of trials per status in one HTML file,
its stylesheet inline and no script, to attach to a report or open from a cluster's storage without a server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from apigen_mt.pipeline.store.io import OutputError, atomic_output
from apigen_mt.pipeline.store.schemas import STATUSES
from apigen_mt.pipeline.view.app import STATIC, Links, environment
from apigen_mt.pipeline.view.index import LOC, RunIndex, Snapshot
from apigen_mt.pipeline.view.pages import trial_view
from apigen_mt.pipeline.view.queries import overview

PER_STATUS = 5


class StaticLinks(Links):
    """Links inside the one file: a sampled trial's section; nothing else exists there."""

    static = True

    def __init__(self, sampled: set[tuple[str, int]]) -> None:
        self.sampled = sampled

    def trial(self, blueprint_id: str, trial: int) -> str | None:
        return f"#{sample_prefix(blueprint_id, trial)}trial" if (blueprint_id, trial) in self.sampled else None

    def blueprint(self, blueprint_id: str) -> str | None:
        return None


def sample_prefix(blueprint_id: str, trial: int) -> str:
    """The prefix of a sampled trial's anchors: ids stay unique with several trials on one page."""
    return "t" + hashlib.sha1(f"{blueprint_id}\n{trial}".encode()).hexdigest()[:10] + "-"


def write_static(index: RunIndex, path: Path, per_status: int = PER_STATUS) -> int:
    """Write the file; how many trials it shows. OutputError when it would replace one of the run folder's files."""
    _refuse_run_files(index.run.path, path)
    snapshot = index.snapshot()
    picked = pl.concat(
        [snapshot.frame.filter(pl.col("status") == status).head(per_status) for status in STATUSES], how="vertical"
    )
    samples = [_sample(index, snapshot, row) for row in picked.select("blueprint_id", "trial", LOC).to_dicts()]
    links = StaticLinks(
        {(row["blueprint_id"], row["trial"]) for row in picked.select("blueprint_id", "trial").to_dicts()}
    )
    html = (
        environment()
        .get_template("static.html")
        .render(
            run_name=str(index.run),
            version=snapshot.version,
            static=True,
            live=False,
            links=links,
            css=(STATIC / "view.css").read_text(encoding="utf-8"),
            title="Run report",
            snapshot=snapshot,
            data=overview(snapshot),
            samples=samples,
            per_status=per_status,
        )
    )
    with atomic_output(path) as out:
        out.write(html)
    return len(samples)


def _refuse_run_files(run_dir: Path, path: Path) -> None:
    """A report may go into the run folder, as a new file or over an earlier report, never over the run's data."""
    target, run = path.resolve(), run_dir.resolve()
    if target.is_relative_to(run) and target.is_file() and target.suffix != ".html":
        raise OutputError(
            f"--static {path} would replace {target.relative_to(run)} of run folder {run_dir}; give a new file or an "
            ".html one"
        )


def _sample(index: RunIndex, snapshot: Snapshot, found: dict[str, Any]) -> dict[str, Any]:
    row = index.trial_row(snapshot, found[LOC])
    return trial_view(row) | {"anchor_prefix": sample_prefix(row["blueprint_id"], row["trial"])}
