"""The main job as one call: `generate` runs the phases a caller names on a run config, into a run folder, and
exports the dataset. The commands `apigen-mt generate`, `blueprints` and `trajectories` are this function with
their options as its arguments (README "Python API").

    from apigen_mt.pipeline import generate
    result = generate("configs/local-cpu.yaml", "runs/demo")    # every phase the config describes, then export
    result.summary.counts, result.export.datasets

What a caller can fix (a bad config or input file, a model that cannot start, a run folder of another config)
is one `GenerateError` line naming what and where; the arguments the CLI has are named as it spells them.
`apigen-mt eval` (`pipeline.eval`) runs its task set through the same `open_config`, `check_counts` and
`run_phases`: one way from a config to the driver.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from apigen_mt.pipeline.config import (
    PHASE1_ROLES,
    PHASE2_ROLES,
    ConfigError,
    Phase,
    RunConfig,
    config_relative,
    load_config,
    task_file_path,
)
from apigen_mt.pipeline.config_phases import MAX_PROPOSALS, MAX_TRIALS
from apigen_mt.pipeline.run.sources import LoadedSource, SourceError, load_source

if TYPE_CHECKING:  # the driver, engines and export load Ray, pyarrow and datasets: imported when a run starts
    from apigen_mt.pipeline.engines.pool import ModelFactory
    from apigen_mt.pipeline.export.dataset import ExportResult
    from apigen_mt.pipeline.run.driver import RunSummary
    from apigen_mt.pipeline.run.phase1 import ProposalPlan
    from apigen_mt.pipeline.store.run_folder import RunFolder

PHASES: tuple[Phase, ...] = get_args(Phase)
# A config built in code has no file: its relative paths are relative to the current folder (this path's
# parent), and messages call it by this name.
IN_CODE = Path("the run config")


class GenerateError(Exception):
    """The job cannot run or finish as asked; the message is one line naming what was wrong and where.
    `ran` is what the run did (no export) when its phases finished and the export after them could not be made."""

    def __init__(self, message: str, ran: GenerateResult | None = None) -> None:
        super().__init__(message)
        self.ran = ran


@dataclass(frozen=True)
class GenerateResult:
    summary: RunSummary  # what the run did: its phases, the manifest's counts, wall time, endpoint fallbacks
    export: ExportResult | None  # the dataset's folders, Parquet files and card; None with export=False
    mirrored_to: str | None  # the URI the run folder is mirrored to, when `output` is one


def generate(
    config: str | Path | RunConfig,
    output: str | Path,
    *,
    phases: Collection[Phase] | None = None,
    export: bool = True,
    task_file: str | Path | None = None,
    domain: str | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    proposals: int | None = None,
    trials: int | None = None,
    exclude_tasks: str | Path | None = None,
    exclude_split: str | None = None,
    force: bool = False,
    progress: bool = True,
    command: Sequence[str] = (),
    model_factory: ModelFactory | None = None,
) -> GenerateResult:
    """Run the config's `phases` into `output`, then export the dataset; raises GenerateError.

    config: a run config file (the paths in it are relative to it) or a RunConfig built in code (relative to
        the current folder).
    output: the run folder, or a filesystem URI such as s3://bucket/runs/x (worked on in a local staging folder
        and mirrored there). A rerun into the same folder does only what the folder lacks.
    phases: "blueprints" (Phase 1) and "trajectories" (Phase 2); default: Phase 1 when the config has a
        blueprint_generation section, and Phase 2. With both, Phase 2 plays the blueprints Phase 1 accepted
        beside the task files.
    export: write the dataset (both layouts, every split), its Parquet files and card after the run; needs Phase 2.
    task_file: Phase 2 plays this file of tasks (JSON Lines or a JSON array) instead of the config's task files.
    domain: the only domain of blueprint_generation that Phase 1 proposes for; task_file's domain (default: the
        config's first task file's).
    data_dir: task_file's data folder (tau-bench's layout; default: the domain's seeded data).
    limit: at most this many tasks from each task file.
    proposals: at most this many proposals per Phase 1 domain (default: the config's `proposals`).
    trials: episodes per task instead of the config's trajectories.trials.
    exclude_tasks: tasks no Phase 1 blueprint may reproduce (any file `apigen-mt validate` reads, tau2-bench's too).
    exclude_split: only exclude_tasks' tasks of this split (tau2's split file beside it, e.g. "test"); the manifest
        and the dataset card name the file, the split and the task count.
    force: add to a run folder made with a different config instead of refusing.
    progress: show progress bars.
    command: the command line the manifest records.
    model_factory: model name -> model, used instead of starting the config's models (engines the caller runs,
        or scripted doubles in tests); the models are then not checked before the run.
    """
    from apigen_mt.pipeline.store.remote import RemoteError
    from apigen_mt.pipeline.store.run_folder import RunFolder

    run_config, config_path = open_config(config)
    chosen = _chosen_phases(run_config, phases)
    if exclude_split is not None and exclude_tasks is None:
        raise GenerateError(f"--exclude-split {exclude_split}: it chooses a split of --exclude-tasks; give that file")
    _check_arguments(chosen, export=export, task_file=task_file, domain=domain, data_dir=data_dir)
    check_counts(limit=limit, proposals=proposals, trials=trials)
    try:
        folder = RunFolder.at(output)
    except RemoteError as exc:
        raise GenerateError(str(exc)) from None
    sources = None
    if "trajectories" in chosen:
        sources = _phase2_sources(run_config, config_path, task_file, domain, data_dir, limit)
    plan = None
    if "blueprints" in chosen:
        plan = _plan(
            run_config, config_path, domain=domain, proposals=proposals, exclude=exclude_tasks, split=exclude_split
        )
    elif exclude_tasks is not None:
        raise GenerateError(
            f"--exclude-tasks filters Phase 1's blueprints, and {config_path} has no blueprint_generation section; "
            "drop the option or add the section"
            if run_config.blueprint_generation is None
            else "--exclude-tasks filters Phase 1's blueprints, and this run leaves Phase 1 out; drop the option"
        )
    if plan is None and not sources:
        example = "tasks: [{domain: retail, path: 'examples:retail'}]"
        raise GenerateError(f"{config_path}: `tasks` names no task file; add e.g. `{example}`")
    summary = run_phases(
        run_config,
        config_path,
        plan,
        sources,
        folder,
        trials=trials,
        force=force,
        progress=progress,
        command=command,
        model_factory=model_factory,
    )
    ran = GenerateResult(summary, None, None if folder.remote is None else str(folder))
    if not export:
        return ran
    if summary.counts["trajectories"]["trials"] == 0:
        # The run did what it could and its manifest says so; but the dataset asked for would hold nothing.
        raise GenerateError(_nothing_played(summary, config_path, folder, task_files=bool(sources)), ran)
    return replace(ran, export=_export(folder, ran))


def _nothing_played(summary: RunSummary, config_path: Path, folder: RunFolder, *, task_files: bool) -> str:
    """Why a run that is to export a dataset holds no trial, and what to change."""
    nothing = "so Phase 2 had nothing to play and there is nothing to export"
    if "blueprints" in summary.phases and not task_files:
        fix = (
            "fix what the failed ones name (an endpoint down?) and run into a new --output folder"
            if summary.counts["proposals"]["proposals_failed"]
            else "raise the proposals or use a stronger proposer"
        )
        return (
            f"Phase 1 accepted no blueprint and {config_path} names no task files, {nothing}; each proposal's "
            f"reasons are in {folder.proposals_dir}: {fix}"
        )
    tasks = summary.counts["tasks"]
    if not tasks["input"]:
        return f"the task files of {config_path} hold no task, {nothing}; name task files that hold tasks"
    return (
        f"stage 1 rejected all {tasks['input']} tasks, {nothing}; their reasons are in {folder.task_rejections_path}: "
        "fix the tasks or name others"
    )


def open_config(config: str | Path | RunConfig) -> tuple[RunConfig, Path]:
    """The config and the path its relative paths hang from (also its name in messages)."""
    if isinstance(config, RunConfig):
        return config, IN_CODE
    try:
        return load_config(config), Path(config)
    except ConfigError as exc:
        raise GenerateError(str(exc)) from None


def _chosen_phases(config: RunConfig, phases: Collection[Phase] | None) -> tuple[Phase, ...]:
    if phases is None:
        return PHASES if config.blueprint_generation is not None else ("trajectories",)
    if isinstance(phases, str) or not phases or not set(phases) <= set(PHASES):
        choices = ", ".join(PHASES)
        raise GenerateError(f"phases {phases!r}: name one or both of {choices}, e.g. phases=['trajectories']")
    return tuple(phase for phase in PHASES if phase in phases)


def _check_arguments(
    phases: tuple[Phase, ...],
    *,
    export: bool,
    task_file: str | Path | None,
    domain: str | None,
    data_dir: str | Path | None,
) -> None:
    """Refuse arguments the chosen phases would not use (none of these the CLI can give)."""
    if export and "trajectories" not in phases:
        raise GenerateError(
            "export=True needs the trajectories phase (a dataset is Phase 2's trials); pass export=False"
        )
    if "trajectories" not in phases and (task_file is not None or data_dir is not None):
        raise GenerateError("task_file and data_dir are Phase 2's input; add the trajectories phase")
    if data_dir is not None and task_file is None:
        raise GenerateError("data_dir is task_file's data folder; give the file too")
    if domain is not None and "blueprints" not in phases and task_file is None:
        raise GenerateError("domain chooses Phase 1's domain or names task_file's; this run has neither")


def check_counts(*, limit: int | None, proposals: int | None, trials: int | None) -> None:
    """Whole numbers in what a run can hold (a huge --trials would build every item in memory); spelled as the
    CLI's options, whose values arrive here."""
    for name, value, bound in (
        ("limit", limit, None),
        ("proposals", proposals, MAX_PROPOSALS),
        ("trials", trials, MAX_TRIALS),
    ):
        if value is None:
            continue
        if type(value) is not int or value < 1 or (bound is not None and value > bound):
            most = f" and at most {bound:,}" if bound is not None else ""
            raise GenerateError(f"--{name} {value!r}: give a whole number of at least 1{most}")


def _phase2_sources(
    config: RunConfig,
    config_path: Path,
    task_file: str | Path | None,
    domain: str | None,
    data_dir: str | Path | None,
    limit: int | None,
) -> list[LoadedSource]:
    """task_file, or else the config's task files (each at most `limit` tasks), loaded."""
    if task_file is not None:
        if domain is None:
            if not config.tasks:
                raise GenerateError(
                    f"say which domain the tasks are for with --domain ({config_path} has no task files)"
                )
            domain = config.tasks[0].domain
        return [_load(domain, Path(task_file), None if data_dir is None else Path(data_dir), limit)]
    return [
        _load(
            entry.domain,
            task_file_path(entry, config_path),
            None if entry.data_dir is None else config_relative(entry.data_dir, config_path),
            limit or entry.limit,
            where=f"{config_path}: tasks[{index}]: ",
        )
        for index, entry in enumerate(config.tasks)
    ]


def _load(domain: str, path: Path | str, data_dir: Path | None, limit: int | None, where: str = "") -> LoadedSource:
    try:
        return load_source(domain, path, data_dir=data_dir, limit=limit)
    except SourceError as exc:
        raise GenerateError(f"{where}{exc}") from None


def _plan(
    config: RunConfig,
    config_path: Path,
    *,
    domain: str | None,
    proposals: int | None,
    exclude: str | Path | None,
    split: str | None,
) -> ProposalPlan:
    """What Phase 1 proposes: the config's domains (or the one asked for), their databases, the excluded tasks."""
    from apigen_mt.pipeline.run.phase1 import ProposalPlan, load_excluded_tasks, planned_domain
    from apigen_mt.pipeline.store.manifest import ExcludedTasks
    from apigen_mt.simulators.domain import DataError

    generation = config.blueprint_generation
    if generation is None:
        raise GenerateError(
            f"{config_path} has no blueprint_generation section to say what Phase 1 proposes; add e.g. "
            "`blueprint_generation: {domains: [{domain: retail, proposals: 8}]}`"
        )
    excluded, exclusion = (), None
    if exclude is not None:
        try:
            excluded = load_excluded_tasks(Path(exclude), split)
        except SourceError as exc:  # the split file
            raise GenerateError(f"--exclude-split {split}: {exc}") from None
        except ValueError as exc:  # InputError included: a missing, unreadable or non-JSON file
            raise GenerateError(f"--exclude-tasks: {exc}") from None
        exclusion = ExcludedTasks(file=str(exclude), split=split, tasks=len(excluded))
    entries = [entry for entry in generation.domains if domain is None or entry.domain == domain]
    if not entries:
        configured = ", ".join(entry.domain for entry in generation.domains)
        raise GenerateError(f"--domain {domain}: {config_path} proposes blueprints for {configured} only")
    planned = []
    for entry in entries:
        data_dir = None if entry.data_dir is None else config_relative(entry.data_dir, config_path)
        count = entry.proposals if proposals is None else min(proposals, entry.proposals)
        try:
            planned.append(planned_domain(entry.domain, data_dir, count))
        except DataError as exc:
            raise GenerateError(f"{config_path}: blueprint_generation ({entry.domain}): {exc}") from None
    return ProposalPlan(tuple(planned), excluded, exclusion)


def run_phases(
    config: RunConfig,
    config_path: Path,
    plan: ProposalPlan | None,
    sources: list[LoadedSource] | None,
    folder: RunFolder,
    *,
    trials: int | None,
    force: bool,
    progress: bool,
    command: Sequence[str],
    model_factory: ModelFactory | None,
    every_task: bool = False,
) -> RunSummary:
    """Check the phases' models, then run them through the driver; every expected failure is one line.
    `every_task`: stage 1 drops no task (`apigen-mt eval`)."""
    from apigen_mt.pipeline.engines.local_models import ModelError
    from apigen_mt.pipeline.engines.openai_backend import EndpointUnavailable
    from apigen_mt.pipeline.engines.pool import preflight
    from apigen_mt.pipeline.engines.resources import ResourceShortfall
    from apigen_mt.pipeline.engines.vllm_backend import EngineStartError
    from apigen_mt.pipeline.run.driver import RunOptions, run_blueprints, run_generate, run_trajectories
    from apigen_mt.pipeline.run.workers import WorkerStartError
    from apigen_mt.pipeline.store.shards import RunFolderError

    roles = (PHASE1_ROLES if plan is not None else ()) + (PHASE2_ROLES if sources is not None else ())
    options = RunOptions(
        folder, force=force, trials=trials, progress=progress, command=tuple(command), every_task=every_task
    )
    try:
        if model_factory is None:
            preflight(config, roles)
        if sources is None:
            return run_blueprints(config, plan, options, model_factory=model_factory)
        if plan is None:
            return run_trajectories(config, sources, options, model_factory=model_factory)
        return run_generate(config, plan, options, sources=sources, model_factory=model_factory)
    except (
        RunFolderError,
        ConfigError,
        ModelError,
        EndpointUnavailable,
        EngineStartError,
        ResourceShortfall,
        WorkerStartError,
    ) as exc:
        named = isinstance(exc, (EndpointUnavailable, ResourceShortfall))  # their messages do not name the config
        raise GenerateError(f"{config_path}: {exc}" if named else str(exc)) from None


def _export(folder: RunFolder, ran: GenerateResult) -> ExportResult:
    from apigen_mt.pipeline.export.dataset import ExportError, export_run
    from apigen_mt.pipeline.store.shards import RunFolderError

    try:
        result = export_run(folder)  # under the folder's lock; a mirrored folder's mirror gets the export
    except (ExportError, RunFolderError) as exc:
        raise GenerateError(str(exc), ran) from None
    return result
