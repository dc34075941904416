"""The eval's front door: `evaluate` plays a config's agent (with the simulated human) on a task set through the run
driver, exactly as `trajectories` does (Ray workers, resume, shards, manifest), except that stage 1 drops no task:
a benchmark is scored on all its tasks. Then it writes the report (`pipeline.eval.report`).

    from apigen_mt.pipeline.eval.evaluate import evaluate
    result = evaluate("configs/local-cpu.yaml", "tau2/retail/tasks.json", "runs/eval", split="test",
                      data_dir="taubench/retail", trials=4)
    result.report["domains"]["retail"]["pass_by_reward"]

The task set (`tasks`): a task file `apigen-mt validate` reads (tau-bench's, tau2-bench's with `split` from the
split file beside it, JSON Lines of blueprints), or a run folder, whose accepted Phase-1 blueprints are played.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apigen_mt.blueprints.task_files import read_tasks
from apigen_mt.pipeline.api import GenerateError, check_counts, open_config, run_phases
from apigen_mt.pipeline.config import RunConfig
from apigen_mt.pipeline.eval.report import EvalSetup, build_report, write_report
from apigen_mt.pipeline.run.phase1 import planned_domain
from apigen_mt.pipeline.run.sources import LoadedSource, SourceError, load_source
from apigen_mt.pipeline.store.io import InputError, read_records
from apigen_mt.pipeline.store.remote import RemoteError
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.shards import RunFolderError
from apigen_mt.simulators.domain import DataError

if TYPE_CHECKING:
    from apigen_mt.pipeline.engines.pool import ModelFactory
    from apigen_mt.pipeline.run.driver import RunSummary

RUN_FOLDER_KIND = "run folder (accepted blueprints)"
TASK_FILE_KIND = "task file"


class EvalError(Exception):
    """The eval cannot run as asked; one line naming what was wrong and where."""


@dataclass(frozen=True)
class EvalResult:
    summary: RunSummary  # what the run did, as `trajectories` reports it
    report: dict[str, Any]  # eval.json's content
    paths: tuple[Path, Path]  # eval.json, README.md


def evaluate(
    config: str | Path | RunConfig,
    tasks: str | Path,
    output: str | Path,
    *,
    split: str | None = None,
    domain: str | None = None,
    data_dir: str | Path | None = None,
    trials: int | None = None,
    limit: int | None = None,
    force: bool = False,
    progress: bool = True,
    command: Sequence[str] = (),
    model_factory: ModelFactory | None = None,
) -> EvalResult:
    """Play every task of `tasks` `trials` times (default: the config's trajectories.trials) into the run folder
    `output` and write its report there; raises EvalError.

    split: the split of a tau2 task file (its split file beside it). domain: the tasks' domain when the file does
    not name it (default: the config's first task file's); of a run folder, the one domain to play. data_dir: the
    tasks' data folder (tau-bench's layout; a run folder's default: the one its manifest names). limit: at most
    this many tasks. The rest as `pipeline.api.generate`.
    """
    try:
        run_config, config_path = open_config(config)
        check_counts(limit=limit, proposals=None, trials=trials)
        folder = RunFolder.at(output)
    except (GenerateError, RemoteError) as exc:
        raise EvalError(str(exc)) from None
    data = None if data_dir is None else Path(data_dir)
    source = _source(run_config, Path(tasks), split=split, domain=domain, data_dir=data, limit=limit)
    try:
        summary = run_phases(
            run_config,
            config_path,
            None,
            [source],
            folder,
            trials=trials,
            force=force,
            progress=progress,
            command=command,
            model_factory=model_factory,
            every_task=True,
        )
    except GenerateError as exc:
        raise EvalError(str(exc)) from None
    setup = EvalSetup(
        config_path=str(config_path),
        config=run_config.model_dump(mode="json"),
        fingerprint=run_config.fingerprint(),
        source=str(tasks),
        source_kind=RUN_FOLDER_KIND if Path(tasks).is_dir() else TASK_FILE_KIND,
        split=split,
        data_dir=None if source.data_dir is None else str(source.data_dir),
        policy=source.policy_origin,
        task_ids=frozenset(str(blueprint.id) for blueprint in source.blueprints),
        format_rejected=len(source.rejected),
        stage_one_problems=source.stage_one_problems,
        nl_assertions_unscored=sum(source.unscored_assertions.values()) if source.unscored_assertions else None,
        trials=trials or run_config.trajectories.trials,
    )
    try:
        with folder.lock():
            report = build_report(setup, folder)
            paths = write_report(folder, report)
    except RunFolderError as exc:
        raise EvalError(str(exc)) from None
    return EvalResult(summary, report, paths)


def _source(
    config: RunConfig, tasks: Path, *, split: str | None, domain: str | None, data_dir: Path | None, limit: int | None
) -> LoadedSource:
    """The task set: a run folder's accepted blueprints, or a task file's tasks (of `split`)."""
    if tasks.is_dir():
        if split is not None:
            raise EvalError(f"--split {split} chooses tasks of a tau2 task file; {tasks} is a run folder")
        return _run_folder_source(tasks, domain=domain, data_dir=data_dir, limit=limit)
    if not tasks.exists():
        raise EvalError(f"--tasks {tasks}: no such file or folder; give a task file or a run folder")
    name = domain or _named_domain(tasks) or (config.tasks[0].domain if config.tasks else None)
    if name is None:
        raise EvalError(f"--tasks {tasks} names no domain (nor does the config's `tasks`); say which with --domain")
    try:
        source = load_source(name, tasks, data_dir=data_dir, limit=limit, split=split)
    except SourceError as exc:
        raise EvalError(str(exc)) from None
    if not source.blueprints:
        why = (
            f"none of its {len(source.rejected)} records is a task of {name}; the first: "
            f"{source.rejected[0]['reasons'][0]}"
            if source.rejected
            else "it holds no task"
        )
        if data_dir is None and source.rejected:
            why += (
                f"; without --data-dir they were read against the {name} domain's own seeded database: give the "
                "data the tasks were written for (tau2-bench's are tau-bench's)"
            )
        raise EvalError(f"--tasks {tasks}: no task to play ({why})")
    return source


def _named_domain(tasks: Path) -> str | None:
    """The one domain the file's records name (a tau2 task's scenario, a blueprint's `domain`), if any."""
    try:
        records = read_records(tasks)
    except InputError as exc:
        raise EvalError(str(exc)) from None
    named = {
        task.record["domain"]
        for task in read_tasks(records, domain=None, db=None)
        if isinstance(task.record, dict) and isinstance(task.record.get("domain"), str)
    }
    if len(named) > 1:
        raise EvalError(f"--tasks {tasks} holds tasks of several domains ({', '.join(sorted(named))}); one per eval")
    return next(iter(named), None)


def _run_folder_source(run: Path, *, domain: str | None, data_dir: Path | None, limit: int | None) -> LoadedSource:
    """The blueprints a run's Phase 1 accepted, of its one domain (or of `domain`), on `data_dir` or the data folder
    its manifest names."""
    folder = RunFolder(run)
    try:
        if not folder.has_proposals():
            raise EvalError(
                f"--tasks {run} is a folder but no run folder with Phase-1 blueprints (no {folder.proposals_dir.name}/ "
                "shards); give a task file, or the output folder of `apigen-mt blueprints` or `generate`"
            )
        accepted = folder.accepted_blueprints()
        manifest = folder.manifest()
    except RunFolderError as exc:
        raise EvalError(str(exc)) from None
    domains = sorted({str(blueprint.domain) for blueprint in accepted})
    if domain is not None and domain not in domains:
        raise EvalError(f"--domain {domain}: run folder {run} holds accepted blueprints of {', '.join(domains)} only")
    if domain is None and len(domains) != 1:
        found = ", ".join(domains) or "none: its Phase 1 accepted no blueprint"
        raise EvalError(f"--tasks {run}: say which domain to play with --domain (its domains: {found})")
    name = domain or domains[0]
    if data_dir is None and manifest is not None and manifest.data_dir is not None:
        data_dir = Path(manifest.data_dir)
    try:
        source = planned_domain(name, data_dir, 0).source
    except (KeyError, DataError) as exc:
        raise EvalError(f"--tasks {run}: {exc.args[0] if isinstance(exc, KeyError) else exc}") from None
    blueprints = [blueprint for blueprint in accepted if blueprint.domain == name][:limit]
    policy = data_dir / "policy.md" if data_dir is not None and (data_dir / "policy.md").is_file() else None
    return replace(
        source,
        blueprints=blueprints,
        origin=f"{run} ({folder.proposals_dir.name}/)",
        policy_origin=str(policy) if policy else f"domain {name}",
    )
