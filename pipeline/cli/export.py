"""`apigen-mt export RUN_DIR`: the run's trials as a dataset (both layouts), Parquet files and a dataset card;
with `--format tasks`, its accepted blueprints as a dataset of tasks for RL trainers (pipeline.export.tasks)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from apigen_mt.pipeline.cli.app import MAIN_JOB, CliError, app, report_export

FORMAT_CHOICES = {"sharegpt": ("sharegpt",), "openai": ("openai",), "both": ("sharegpt", "openai")}
TASKS = "tasks"
SPLIT_CHOICES = {
    "train": ("train",),
    "rejected": ("rejected",),
    "preference": ("preference",),
    "all": ("train", "rejected", "preference"),
}


@app.command("export", rich_help_panel=MAIN_JOB)
def export(
    run_dir: Annotated[
        str, typer.Argument(help="Run folder written by `apigen-mt generate` (or the URI given as its --output).")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Layout: sharegpt (APIGen-MT-5k), openai, or both; tasks: the accepted blueprints as RL tasks.",
        ),
    ] = "both",
    split: Annotated[str, typer.Option("--split", help="train, rejected, preference, or all.")] = "all",
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub", help="Also upload to this Hugging Face dataset repo (NAMESPACE/NAME); token: HF_TOKEN."
        ),
    ] = None,
) -> None:
    """Export a run's trials as a dataset: RUN_DIR/dataset (save_to_disk), RUN_DIR/data (Parquet), a card and plots."""
    if format == TASKS:
        if split != "all" or push_to_hub is not None:
            raise CliError("--format tasks writes the accepted blueprints as one split; drop --split and --push-to-hub")
        _export_tasks(run_dir)
        return
    if format not in FORMAT_CHOICES:
        raise CliError(f"--format {format!r} is not one of {', '.join([*FORMAT_CHOICES, TASKS])}")
    if split not in SPLIT_CHOICES:
        raise CliError(f"--split {split!r} is not one of {', '.join(SPLIT_CHOICES)}")
    # Imported here: polars, pyarrow and datasets would slow down every other command's start.
    from apigen_mt.pipeline.export.dataset import ExportError, export_run
    from apigen_mt.pipeline.store.run_folder import RunFolder
    from apigen_mt.pipeline.store.shards import RunFolderError

    try:
        run = RunFolder.at(run_dir)
        result = export_run(run, formats=FORMAT_CHOICES[format], splits=SPLIT_CHOICES[split], push_to_hub=push_to_hub)
    except (ExportError, RunFolderError) as exc:
        raise CliError(str(exc)) from None
    report_export(result, SPLIT_CHOICES[split], None if run.remote is None else str(run))


def _export_tasks(run_dir: str) -> None:
    from apigen_mt.pipeline.export.dataset import ExportError
    from apigen_mt.pipeline.export.tasks import export_tasks
    from apigen_mt.pipeline.store.run_folder import RunFolder
    from apigen_mt.pipeline.store.shards import RunFolderError

    try:
        run = RunFolder.at(run_dir)
        result = export_tasks(run)
    except (ExportError, RunFolderError) as exc:
        raise CliError(str(exc)) from None
    print(f"exported {result.tasks} tasks", file=sys.stderr)
    print(f"  tasks: {result.dataset} (load_from_disk), {result.parquet} (Parquet)", file=sys.stderr)
    if run.remote is not None:
        print(f"  mirrored to {run}", file=sys.stderr)
