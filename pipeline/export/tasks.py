"""`apigen-mt export RUN --format tasks`: the run's accepted blueprints as a dataset of tasks for RL trainers.

```
RUN/dataset-tasks/                       save_to_disk, one split `train`: load_from_disk(...)["train"]
RUN/data-tasks/train-00000.parquet       the same rows for load_dataset("parquet")
```

Rows and columns: `apigen_mt.pipeline.rl.tasks` (prompt, tools, task_id, domain, info); a row rebuilds its
episode and reward without the run folder (`pipeline.rl.tasks.task_env`). Written apart from the trials'
dataset, so either export leaves the other's outputs as they are; like it, under the run's lock and swapped
in whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from apigen_mt.pipeline.export.dataset import exporting, write_datasets
from apigen_mt.pipeline.export.layouts import MESSAGES, ExportError, message_table
from apigen_mt.pipeline.rl.tasks import SEEDED, task_row
from apigen_mt.pipeline.store.output import atomic_entries
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.simulators.domain import DataError, get_domain

DATASET, PARQUET = "dataset-tasks", "data-tasks"
SCHEMA = pa.schema(
    [
        pa.field("prompt", MESSAGES),  # one JSON object per message, the `datasets` Json feature
        pa.field("tools", pa.string()),  # JSON: OpenAI tools
        pa.field("task_id", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("info", pa.string()),  # JSON: pipeline.rl.tasks.TaskInfo
    ]
)


@dataclass(frozen=True)
class TasksExport:
    run_dir: Path
    dataset: Path  # save_to_disk folder
    parquet: Path
    tasks: int


def export_tasks(run: Path | RunFolder) -> TasksExport:
    """Write the run's accepted blueprints as the tasks dataset; ExportError when it has none to write."""
    with exporting(run) as folder:
        rows = _rows(folder)
        table = message_table(rows, SCHEMA)
        with atomic_entries(folder.path, (DATASET, PARQUET)) as staging:
            (staging / PARQUET).mkdir()
            pq.write_table(table, staging / PARQUET / "train-00000.parquet", compression="zstd")
            write_datasets(staging, {"tasks": DATASET}, {"tasks": {"train": table}})
    return TasksExport(folder.path, folder.path / DATASET, folder.path / PARQUET / "train-00000.parquet", len(rows))


def _rows(folder: RunFolder) -> list[dict]:
    if not folder.has_proposals():
        raise ExportError(
            f"{folder.path} holds no Phase 1 proposals, so no accepted blueprints to export as tasks; run "
            "`apigen-mt generate` (or `apigen-mt blueprints`) into it first"
        )
    blueprints = folder.accepted_blueprints()
    if not blueprints:
        raise ExportError(f"{folder.path}: Phase 1 accepted no blueprint, so there is no task to export")
    manifest = folder.manifest()
    data_dir = None if manifest is None else manifest.data_dir
    source = SEEDED if data_dir is None else Path(data_dir).name
    rows = []
    loaded = {}  # domain name -> (domain, db, policy)
    for blueprint in blueprints:
        name = blueprint.domain or ""
        if name not in loaded:
            try:
                domain = get_domain(name)
                loaded[name] = (domain, domain.load(data_dir), domain.policy_text(data_dir))
            except (KeyError, DataError) as exc:
                reason = exc.args[0] if isinstance(exc, KeyError) else exc
                raise ExportError(f"blueprint {blueprint.id!r}: {reason}") from None
        domain, db, policy = loaded[name]
        rows.append(task_row(domain, db, policy, blueprint, data_source=source))
    return rows
