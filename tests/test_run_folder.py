"""The run folder after the redesign of issue 17: a folder made before it is read and resumed as it was, and
the manifest's counts get one key per phase while keeping the old mixed one.

tests/fixtures/run-before-redesign/run was made by commit f54af6e (before `RunFolder`) from the config beside it,
with the scripted doubles of tests/scripted_phase1.py: 12 proposals (6 accepted) and one trial of each accepted
blueprint and of the 2 demo tasks the config names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from apigen_mt.pipeline.config import load_config
from apigen_mt.pipeline.renamed import RenamedWarning
from apigen_mt.pipeline.store.run_folder import RunFolder
from tests.conftest import load_by_value

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run-before-redesign"
CONFIG = FIXTURE / "config.yaml"
OLD_MANIFEST = json.loads((FIXTURE / "run" / "manifest.json").read_text())
STAGE_ONE = {"input": 8, "valid": 8, "rejected": 0}  # 6 accepted blueprints and 2 demo tasks, all valid

scripted = load_by_value("scripted_phase1")


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    return tmp_path / "run"


def test_the_old_folder_reads_as_it_was_written(old_run: Path) -> None:
    folder = RunFolder(old_run)
    manifest = folder.manifest()
    assert manifest is not None and manifest.finished_at is not None
    # Same config, same fingerprint: the folder's config check passes, so a resume is allowed.
    with pytest.warns(RenamedWarning, match="the config key `blueprints` is now `tasks`"):
        config = load_config(CONFIG)  # the old key, read as the new one
    assert manifest.fingerprint == config.fingerprint()
    assert folder.check_resume(manifest.fingerprint, manifest.data_dir, force=False) == manifest
    old = OLD_MANIFEST["counts"]
    funnel = folder.funnel()
    assert {name: funnel[name] for name in funnel} == {name: old["blueprints"][name] for name in funnel}
    assert len(folder.accepted_blueprints()) == funnel["proposals_accepted"] == 6
    assert len(folder.final_proposals()) == 12
    assert set(folder.stored_trials()) == {(row["blueprint_id"], 0) for row in folder.trials().to_pylist()}
    assert folder.trials().num_rows == old["trajectories"]["trials"] == 8


def test_counts_split_by_phase_and_keep_the_old_key(old_run: Path) -> None:
    folder = RunFolder(old_run)
    old = OLD_MANIFEST["counts"]
    # A Phase-1-only rerun touches no task file: stage 1's counts come from the old mixed key.
    counts = folder.counts(old, None)
    assert counts["tasks"] == STAGE_ONE
    assert counts["proposals"] == dict(folder.funnel())
    assert counts["blueprints"] == old["blueprints"]
    assert counts["trajectories"] == old["trajectories"]
    # This run's stage 1 replaces the earlier one, in both keys.
    counts = folder.counts(old, {"input": 3, "valid": 2, "rejected": 1})
    assert counts["tasks"] == {"input": 3, "valid": 2, "rejected": 1}
    assert counts["blueprints"] == old["blueprints"] | counts["tasks"]


def test_a_run_folder_made_before_the_redesign_resumes(old_run: Path, ray_local) -> None:
    from apigen_mt.pipeline import generate

    before = {path.name for path in old_run.rglob("part-*.parquet")}
    with pytest.warns(RenamedWarning):
        result = generate(CONFIG, old_run, trials=2, progress=False, model_factory=scripted.factory)
    summary = result.summary
    # Nothing done is done again: no proposal runs, the 8 first trials are kept, the 8 second ones played.
    assert (summary.proposed, summary.proposals_skipped) == (0, 12)
    assert (summary.played, summary.skipped) == (8, 8)
    assert before <= {path.name for path in old_run.rglob("part-*.parquet")}
    manifest = RunFolder(old_run).manifest()
    assert manifest.fingerprint == OLD_MANIFEST["fingerprint"]
    assert manifest.started_at == OLD_MANIFEST["started_at"]
    counts = manifest.counts
    assert counts["blueprints"] == OLD_MANIFEST["counts"]["blueprints"]
    assert counts["tasks"] == STAGE_ONE and counts["proposals"] == dict(RunFolder(old_run).funnel())
    assert counts["trajectories"]["trials"] == 16
    assert result.export is not None and result.export.rows["train"] + result.export.rows["rejected"] <= 16


def test_a_file_uri_is_the_local_folder_it_names(tmp_path: Path) -> None:
    folder = tmp_path / "a run"
    assert RunFolder.at(folder.as_uri()).path == folder and RunFolder.at(folder.as_uri()).remote is None
    assert RunFolder.at(str(folder)).path == folder
