"""`apigen-mt export`: a run folder's trials as a Hugging Face dataset, Parquet files and a dataset card.

```
RUN/dataset/                   save_to_disk of the first format asked (sharegpt by default)
RUN/dataset-<format>/          save_to_disk of each further format (dataset-openai)
RUN/data/<format>/<split>-00000.parquet    the same rows for load_dataset("parquet") and the Hub viewer
RUN/README.md, RUN/plots/      the dataset card (see pipeline.export.card)
```

Splits: `train` holds the unique accepted trajectories (same agent calls and replies count once per
blueprint), `rejected` the trials rejected because of the agent or the simulated human, with their reasons
and attribution; both have one schema per format, so they are splits of one config. `preference` holds DPO
pairs in OpenAI messages whatever the format. Some trials stay in the shards but go in no split, and the
result counts them: those with no conversation (the simulated human failed before saying anything), the
system's failures (status `failed`: an endpoint or engine that was down or answered garbage; a rerun plays
them again) and rows of a status the pipeline does not write. A split without rows is not written:
`datasets` cannot load an empty Parquet split. Row layouts: `pipeline.export.layouts`.

The export holds the run folder's lock, so it never reads a folder a run is writing (and no run starts
while it works). It first takes over what a killed process left: temp outputs, and the journals of rows
a killed run finished but had not put in a shard yet (they become shards, as a resumed run would make
them). Every output is built in one temp folder and all are swapped in together, with stop signals held
back, so a stopped or failed export leaves the previous one whole; rerunning is safe.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from apigen_mt.pipeline.export.card import CARD, PLOTS_DIR, write_card
from apigen_mt.pipeline.export.card_plots import PLOTS
from apigen_mt.pipeline.export.layouts import ExportError, layout_table, preference_table, select_rows
from apigen_mt.pipeline.export.statistics import run_statistics
from apigen_mt.pipeline.store.output import atomic_entries, remove_stale_temps
from apigen_mt.pipeline.store.run_folder import RunFolder

__all__ = ["FORMATS", "SPLITS", "ExportError", "ExportResult", "export_run", "exporting", "hub_token", "push_run"]

FORMATS = ("sharegpt", "openai")
SPLITS = ("train", "rejected", "preference")
# Every output of an export, replaced together: one not written this time (a format not asked) is removed.
OUTPUTS = ("data", "dataset", *(f"dataset-{format_}" for format_ in FORMATS), PLOTS_DIR, CARD)


@dataclass(frozen=True)
class ExportResult:
    run_dir: Path
    datasets: dict[str, Path]  # format -> save_to_disk folder
    parquet: dict[str, dict[str, Path]]  # format -> split -> Parquet file
    rows: dict[str, int]  # split -> rows (0: the split was not written)
    trials: int  # in the run folder, each (blueprint, trial) once
    left_out: dict[str, int]  # trials with no conversation, in no split: termination -> trials
    system_failures: dict[str, int]  # failed trials (the system's), in no split: termination -> trials
    unknown_status: dict[str, int]  # rows of a status the pipeline does not write, in no split: status -> rows
    card: Path
    plots: list[Path]
    pushed_to: str | None

    def notes(self) -> list[str]:
        """One line for each kind of trial the splits leave out, and for a run folder without trials."""
        notes = []
        if not self.trials:
            notes.append(f"{self.run_dir} holds no trials (its run played none), so every split is empty")
        if self.left_out:
            notes.append(
                f"left out {_trials(self.left_out)} with no conversation (the simulated human said nothing; they stay "
                f"in the shards with their reasons); how they ended: {_tally(self.left_out)}"
            )
        if self.system_failures:
            notes.append(
                f"left out {_trials(self.system_failures)} that failed because of the system (an endpoint or engine "
                "down or answering garbage: not data; a rerun plays them again while they have attempts left); how "
                f"they ended: {_tally(self.system_failures)}"
            )
        if self.unknown_status:
            rows = sum(self.unknown_status.values())
            notes.append(
                f"left out {rows} row{'' if rows == 1 else 's'} of a status apigen-mt does not write "
                f"({_tally(self.unknown_status)}): a shard was changed after its run wrote it"
            )
        return notes


def _trials(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} trial{'' if total == 1 else 's'}"


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def export_run(
    run: Path | RunFolder,
    *,
    formats: Sequence[str] = FORMATS,
    splits: Sequence[str] = SPLITS,
    push_to_hub: str | None = None,
) -> ExportResult:
    """Write the dataset folders, Parquet files and card of the run folder `run`; push them to the Hub when asked.

    A `RunFolder` with a remote mirror is pulled first and its mirror given the export's outputs after."""
    _check_choices("format", formats, FORMATS)
    _check_choices("split", splits, SPLITS)
    # Checked first, so that a push that cannot work fails before the export's work, not after.
    token = hub_token() if push_to_hub else None
    with exporting(run) as folder:
        result = _export(folder, formats, splits)
        if push_to_hub:
            push_run(folder.path, push_to_hub, token or "")
    return replace(result, pushed_to=push_to_hub)


@contextlib.contextmanager
def exporting(run: Path | RunFolder) -> Iterator[RunFolder]:
    """The run folder an export writes into: checked, held under its lock, pulled from its mirror and taken over
    from killed processes; when the block ends, its mirror is given the export's outputs."""
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    folder.refuse_a_file()
    if folder.remote is None and not folder.path.is_dir():
        raise ExportError(f"run folder {folder.path} does not exist; give the --output folder of `apigen-mt generate`")
    with folder.lock():
        folder.pull()
        _take_over(folder)
        yield folder
        folder.push_export()


def _take_over(folder: RunFolder) -> None:
    """Clear up after processes killed in this folder (the lock says none is left): their temp outputs go, and a
    run's journals become shards, since opening a shard writer does that (nothing is written after)."""
    remove_stale_temps(folder.path)
    if folder.trajectories_dir.is_dir():
        folder.trajectory_writer(rows_per_shard=1).close()
    if folder.proposals_dir.is_dir():
        folder.proposal_writer(rows_per_shard=1).close()


def _export(folder: RunFolder, formats: Sequence[str], splits: Sequence[str]) -> ExportResult:
    run_dir = folder.path
    manifest = folder.manifest()
    # A run whose Phase 2 played nothing has a manifest that counts its trials; a folder without either never
    # had Phase 2 run into it.
    if not folder.has_trajectories() and (manifest is None or "trajectories" not in manifest.counts):
        raise ExportError(
            f"{run_dir} holds no trajectory shards ({folder.trajectories_dir}/part-*.parquet); run `apigen-mt "
            "generate` into it first"
        )
    trials = folder.trials()
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

    unique = {(row["blueprint_id"], row["trial"]) for row in selection.train}
    keys = zip(trials["blueprint_id"].to_pylist(), trials["trial"].to_pylist(), strict=True)
    statistics = run_statistics(trials, [key in unique for key in keys])
    dataset_dirs = {format_: "dataset" if n == 0 else f"dataset-{format_}" for n, format_ in enumerate(tables)}
    set_aside = selection.set_aside()
    with atomic_entries(run_dir, OUTPUTS) as staging:
        parquet = _write_parquet(staging, tables)
        write_datasets(staging, dataset_dirs, tables)
        write_card(
            staging,
            run_dir,
            trials,
            statistics,
            manifest,
            exported={
                format_: {split: table.num_rows for split, table in found.items()} for format_, found in tables.items()
            },
            dataset_dirs=dataset_dirs,
            set_aside=set_aside,
        )
    counts = {"train": len(selection.train), "rejected": len(selection.rejected), "preference": len(selection.pairs)}
    return ExportResult(
        run_dir=run_dir,
        datasets={format_: run_dir / name for format_, name in dataset_dirs.items()},
        parquet={
            format_: {split: run_dir / path for split, path in by_split.items()}
            for format_, by_split in parquet.items()
        },
        rows={split: counts[split] if split in splits else 0 for split in SPLITS},
        trials=trials.num_rows,
        left_out=set_aside.no_conversation,
        system_failures=set_aside.system_failures,
        unknown_status=set_aside.unknown_status,
        card=run_dir / CARD,
        plots=[run_dir / PLOTS_DIR / name for name in PLOTS],
        pushed_to=None,
    )


def _check_choices(what: str, given: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [value for value in given if value not in allowed]
    if unknown or not given:
        named = ", ".join(map(repr, unknown)) or "(none given)"
        raise ExportError(f"unknown {what} {named}; choose from {', '.join(allowed)}")


def _write_parquet(staging: Path, tables: dict[str, dict[str, pa.Table]]) -> dict[str, dict[str, Path]]:
    """`staging/data/<format>/<split>-00000.parquet`; format -> split -> path relative to the run folder."""
    written: dict[str, dict[str, Path]] = {}
    for format_, by_split in tables.items():
        (staging / "data" / format_).mkdir(parents=True)
        for split, table in by_split.items():
            path = Path("data", format_, f"{split}-00000.parquet")
            pq.write_table(table, staging / path, compression="zstd")
            written.setdefault(format_, {})[split] = path
    return written


def write_datasets(staging: Path, folders: dict[str, str], tables: dict[str, dict[str, pa.Table]]) -> None:
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the CLI reports what was written; per-split bars are noise
    try:
        for format_, name in folders.items():
            splits = datasets.DatasetDict({split: datasets.Dataset(table) for split, table in tables[format_].items()})
            splits.save_to_disk(str(staging / name))
    finally:
        if bars:
            datasets.enable_progress_bars()


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
