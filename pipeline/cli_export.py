"""`apigen-mt export RUN_DIR`: the run's trials as a dataset (both layouts), Parquet files and a dataset card."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from apigen_mt.pipeline.cli import CliError, app
from apigen_mt.pipeline.cli_run import open_remote

if TYPE_CHECKING:
    from apigen_mt.pipeline.export import ExportResult
    from apigen_mt.pipeline.remote import RemoteRun

FORMAT_CHOICES = {"sharegpt": ("sharegpt",), "openai": ("openai",), "both": ("sharegpt", "openai")}
SPLIT_CHOICES = {
    "train": ("train",),
    "rejected": ("rejected",),
    "preference": ("preference",),
    "all": ("train", "rejected", "preference"),
}


@app.command("export")
def export(
    run_dir: Annotated[
        str, typer.Argument(help="Run folder written by `apigen-mt generate` (or the URI given as its --output).")
    ],
    format: Annotated[str, typer.Option("--format", help="Layout: sharegpt (APIGen-MT-5k), openai, or both.")] = "both",
    split: Annotated[str, typer.Option("--split", help="train, rejected, preference, or all.")] = "all",
    push_to_hub: Annotated[
        str | None,
        typer.Option("--push-to-hub", help="Also upload to this Hugging Face dataset repo (NAMESPACE/NAME); token: HF_TOKEN."),
    ] = None,
) -> None:
    """Export a run's trials as a dataset: RUN_DIR/dataset (save_to_disk), RUN_DIR/data (Parquet), a card and plots."""
    if format not in FORMAT_CHOICES:
        raise CliError(f"--format {format!r} is not one of {', '.join(FORMAT_CHOICES)}")
    if split not in SPLIT_CHOICES:
        raise CliError(f"--split {split!r} is not one of {', '.join(SPLIT_CHOICES)}")
    remote = open_remote(run_dir)
    if remote is None and not Path(run_dir).is_dir():
        raise CliError(f"run folder {run_dir} does not exist; give the --output folder of `apigen-mt generate`")
    # Imported here: polars, pyarrow and datasets would slow down every other command's start.
    from apigen_mt.pipeline.export import ExportError, export_run
    from apigen_mt.pipeline.storage import RunFolderError

    try:
        if remote is not None:
            remote.pull()
        folder = Path(run_dir) if remote is None else remote.local
        result = export_run(folder, formats=FORMAT_CHOICES[format], splits=SPLIT_CHOICES[split], push_to_hub=push_to_hub)
        if remote is not None:
            remote.push_export()
    except (ExportError, RunFolderError) as exc:
        raise CliError(str(exc)) from None
    report_export(result, SPLIT_CHOICES[split], remote)


def report_export(result: ExportResult, splits: Sequence[str], remote: RemoteRun | None = None) -> None:
    """What an export wrote, on stderr (printed as is: paths may contain brackets rich would take for markup)."""
    rows = ", ".join(f"{name} {count}" for name, count in result.rows.items() if name in splits)
    print(f"exported {rows} rows", file=sys.stderr)
    if result.left_out:
        left_out = sum(result.left_out.values())
        ended = ", ".join(f"{termination} {count}" for termination, count in result.left_out.items())
        print(
            f"  left out {left_out} trial{'' if left_out == 1 else 's'} with no conversation (the simulated human said "
            f"nothing; they stay in the shards with their reasons); how they ended: {ended}",
            file=sys.stderr,
        )
    for format_, folder in result.datasets.items():
        print(f"  {format_}: {folder} (load_from_disk), {result.run_dir / 'data' / format_} (Parquet)", file=sys.stderr)
    print(f"  card: {result.card}", file=sys.stderr)
    if remote is not None:
        print(f"  mirrored to {remote}", file=sys.stderr)
    if result.pushed_to:
        print(f"  pushed to the Hugging Face Hub dataset {result.pushed_to}", file=sys.stderr)
