"""`apigen-mt export`: a run folder's trials as a Hugging Face dataset, Parquet files and a dataset card.

```
RUN/dataset/                   save_to_disk of the first format asked (sharegpt by default)
RUN/dataset-<format>/          save_to_disk of each further format (dataset-openai)
RUN/data/<format>/<split>-00000.parquet    the same rows for load_dataset("parquet") and the Hub viewer
RUN/README.md, RUN/plots/      the dataset card (see pipeline.export.card)
```

Splits: `train` holds the unique accepted trajectories (same agent calls and replies count once per
blueprint), `rejected` the rejected and failed trials with their reasons and attribution; both have
one schema per format, so they are splits of one config. `preference` holds DPO pairs in OpenAI
messages whatever the format. A trial with no conversation (the simulated human failed before saying
anything) stays in the shards but goes in no split; the result counts them by how they ended. A split
without rows is not written: `datasets` cannot load an empty Parquet split. Each output is replaced
whole through the output writer, so rerunning is safe. Row layouts: `pipeline.export.layouts`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from apigen_mt.pipeline.export.card import write_card
from apigen_mt.pipeline.export.layouts import ExportError, layout_table, preference_table, select_rows
from apigen_mt.pipeline.export.statistics import run_statistics
from apigen_mt.pipeline.store.io import atomic_directory
from apigen_mt.pipeline.store.run_folder import RunFolder

__all__ = ["FORMATS", "SPLITS", "ExportError", "ExportResult", "export_run", "hub_token", "push_run"]

FORMATS = ("sharegpt", "openai")
SPLITS = ("train", "rejected", "preference")


@dataclass(frozen=True)
class ExportResult:
    run_dir: Path
    datasets: dict[str, Path]  # format -> save_to_disk folder
    parquet: dict[str, dict[str, Path]]  # format -> split -> Parquet file
    rows: dict[str, int]  # split -> rows (0: the split was not written)
    left_out: dict[str, int]  # trials with no conversation, in no split: termination -> trials
    card: Path
    plots: list[Path]
    pushed_to: str | None


def export_run(
    run_dir: Path,
    *,
    formats: Sequence[str] = FORMATS,
    splits: Sequence[str] = SPLITS,
    push_to_hub: str | None = None,
) -> ExportResult:
    """Write the dataset folders, Parquet files and card of `run_dir`; push them to the Hub when asked."""
    _check_choices("format", formats, FORMATS)
    _check_choices("split", splits, SPLITS)
    # Checked first, so that a push that cannot work fails before the export's work, not after.
    token = hub_token() if push_to_hub else None
    run = RunFolder(run_dir)
    folder = run.trajectories_dir
    if not run.has_trajectories():
        raise ExportError(
            f"{run_dir} holds no trajectory shards ({folder}/part-*.parquet); run `apigen-mt generate` into it first"
        )
    trials = run.trials()
    rows = sorted(trials.to_pylist(), key=lambda row: (row["blueprint_id"], row["trial"]))
    selection = select_rows(rows)

    tables: dict[str, dict[str, pa.Table]] = {}
    for format_ in formats:
        chosen = {"train": selection.train, "rejected": selection.rejected}
        tables[format_] = {
            split: layout_table(format_, chosen[split]) for split in ("train", "rejected") if split in splits
        }
        if "preference" in splits:
            tables[format_]["preference"] = preference_table(selection.pairs)
        tables[format_] = {split: table for split, table in tables[format_].items() if table.num_rows}

    parquet = _write_parquet(run_dir, tables, inputs=[folder])
    datasets_dirs = _write_datasets(run_dir, tables, inputs=[folder])
    unique = {(row["blueprint_id"], row["trial"]) for row in selection.train}
    keys = zip(trials["blueprint_id"].to_pylist(), trials["trial"].to_pylist(), strict=True)
    statistics = run_statistics(trials, [key in unique for key in keys])
    card, plots = write_card(
        run_dir,
        statistics,
        run.manifest(),
        exported={
            format_: {split: table.num_rows for split, table in found.items()} for format_, found in tables.items()
        },
        dataset_dirs={format_: path.name for format_, path in datasets_dirs.items()},
        left_out=selection.left_out_by_termination(),
    )
    if push_to_hub:
        push_run(run_dir, push_to_hub, token or "")
    counts = {"train": len(selection.train), "rejected": len(selection.rejected), "preference": len(selection.pairs)}
    return ExportResult(
        run_dir=run_dir,
        datasets=datasets_dirs,
        parquet=parquet,
        rows={split: counts[split] if split in splits else 0 for split in SPLITS},
        left_out=selection.left_out_by_termination(),
        card=card,
        plots=plots,
        pushed_to=push_to_hub,
    )


def _check_choices(what: str, given: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [value for value in given if value not in allowed]
    if unknown or not given:
        named = ", ".join(map(repr, unknown)) or "(none given)"
        raise ExportError(f"unknown {what} {named}; choose from {', '.join(allowed)}")


def _write_parquet(
    run_dir: Path, tables: dict[str, dict[str, pa.Table]], *, inputs: list[Path]
) -> dict[str, dict[str, Path]]:
    written: dict[str, dict[str, Path]] = {}
    with atomic_directory(run_dir / "data", inputs=inputs, replace=True) as tmp:
        for format_, by_split in tables.items():
            (tmp / format_).mkdir()
            for split, table in by_split.items():
                pq.write_table(table, tmp / format_ / f"{split}-00000.parquet", compression="zstd")
                written.setdefault(format_, {})[split] = run_dir / "data" / format_ / f"{split}-00000.parquet"
    return written


def _write_datasets(run_dir: Path, tables: dict[str, dict[str, pa.Table]], *, inputs: list[Path]) -> dict[str, Path]:
    import datasets

    folders = {format_: run_dir / ("dataset" if n == 0 else f"dataset-{format_}") for n, format_ in enumerate(tables)}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the CLI reports what was written; per-split bars are noise
    try:
        for format_, folder in folders.items():
            splits = datasets.DatasetDict({split: datasets.Dataset(table) for split, table in tables[format_].items()})
            with atomic_directory(folder, inputs=inputs, replace=True) as tmp:
                splits.save_to_disk(str(tmp))
    finally:
        if bars:
            datasets.enable_progress_bars()
    # A format exported before but not now would otherwise sit there looking current.
    for format_ in FORMATS:
        stale = run_dir / f"dataset-{format_}"
        if stale not in folders.values() and stale.is_dir():
            shutil.rmtree(stale)
    return folders


def hub_token() -> str:
    """HF_TOKEN from the environment; ExportError when unset or when the Hub client is told to stay offline."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise ExportError(
            "--push-to-hub needs a Hugging Face access token with write permission in the HF_TOKEN environment "
            "variable; create one in your Hugging Face account settings and export HF_TOKEN=..."
        )
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ExportError("--push-to-hub cannot work offline: HF_HUB_OFFLINE is set; unset it when online and rerun")
    return token


def push_run(run_dir: Path, repo: str, token: str) -> None:
    """Upload the card, plots and Parquet files to the dataset repo `repo` in one commit (all or nothing)."""
    from huggingface_hub import HfApi

    # errors.HTTPError is the base error of whichever HTTP client the hub library uses (HfHubHTTPError included).
    from huggingface_hub.errors import HFValidationError, HTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=run_dir,
            allow_patterns=["README.md", "data/**", "plots/**"],
            delete_patterns=["data/**", "plots/**"],  # files of an earlier export go in the same commit
            commit_message=f"apigen-mt export of {run_dir.name}",
        )
    except HFValidationError as exc:
        raise ExportError(
            f"--push-to-hub {repo}: not a valid repo id ({_first_line(exc)}); use NAMESPACE/NAME"
        ) from None
    except (HTTPError, OSError) as exc:
        raise ExportError(
            f"could not push to the Hugging Face Hub dataset {repo}: {_first_line(exc)}; the local export in {run_dir} "
            "is complete, so check the network and HF_TOKEN and rerun the export with --push-to-hub"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
