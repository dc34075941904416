"""`apigen-mt blueprints`, `trajectories` and `generate`: the main job, through the one run driver."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from apigen_mt.pipeline.cli import CliError, app
from apigen_mt.pipeline.config import ConfigError, RunConfig, load_config, source_path
from apigen_mt.pipeline.sources import LoadedSource, SourceError, load_source

if TYPE_CHECKING:
    from apigen_mt.pipeline.proposals import ProposalPlan
    from apigen_mt.pipeline.remote import RemoteRun
    from apigen_mt.pipeline.run import RunOptions, RunSummary

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/local-cpu.yaml.")]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        help="Run folder (shards, manifest, dataset), or a filesystem URI such as s3://bucket/runs/x (staged locally, "
        "mirrored there); default: runs/CONFIG_NAME.",
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit", min=1, help="Take at most N blueprints from each source (Phase 1: at most N proposals per domain)."
    ),
]
TrialsOpt = Annotated[
    int | None, typer.Option("--trials", min=1, help="Episodes per blueprint (default: the config's trajectories.trials).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Add to a run folder made with a different config instead of refusing.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]
ExcludeOpt = Annotated[
    Path | None,
    typer.Option(
        "--exclude-tasks",
        help="Tasks no blueprint may reproduce (any file `validate` reads, e.g. a benchmark's test tasks): Phase 1 "
        "rejects a blueprint with the same write actions or a too similar instruction, naming the task.",
    ),
]


def _config(path: Path) -> RunConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _output(config_path: Path, output: str | None) -> tuple[Path, RemoteRun | None]:
    """The local run folder, and the URI it mirrors when --output is one."""
    if output is None:
        return Path("runs") / config_path.stem, None
    remote = open_remote(output)
    return (Path(output), None) if remote is None else (remote.local, remote)


def open_remote(output: str) -> RemoteRun | None:
    """The mirror of a URI output (None for a local folder); a URI pyarrow cannot use is one CLI line."""
    from apigen_mt.pipeline.remote import RemoteError, RemoteRun, is_uri

    if not is_uri(output):
        return None
    try:
        return RemoteRun(output)
    except RemoteError as exc:
        raise CliError(str(exc)) from None


def _run(
    config: RunConfig,
    config_path: Path,
    roles: tuple[str, ...],
    run: Callable[[RunOptions], RunSummary],
    output: tuple[Path, RemoteRun | None],
    *,
    trials: int | None,
    force: bool,
    quiet: bool,
) -> RunSummary:
    """Check the roles' models, run, report; every expected failure becomes one CLI line."""
    from apigen_mt.pipeline.engines import preflight
    from apigen_mt.pipeline.models import ModelError
    from apigen_mt.pipeline.openai_backend import EndpointUnavailable
    from apigen_mt.pipeline.resources import ResourceShortfall
    from apigen_mt.pipeline.run import RunOptions
    from apigen_mt.pipeline.storage import RunFolderError
    from apigen_mt.pipeline.vllm_backend import EngineStartError
    from apigen_mt.pipeline.workers import WorkerStartError

    try:
        preflight(config, roles)
        options = RunOptions(
            output=output[0], force=force, trials=trials, progress=not quiet, command=tuple(sys.argv), remote=output[1]
        )
        summary = run(options)
    except (
        RunFolderError, ConfigError, ModelError, EndpointUnavailable, EngineStartError, ResourceShortfall, WorkerStartError
    ) as exc:  # fmt: skip
        named = isinstance(exc, (EndpointUnavailable, ResourceShortfall))  # their messages do not name the config
        raise CliError(f"{config_path}: {exc}" if named else str(exc)) from None
    _report(summary)
    if output[1] is not None:
        print(f"mirrored to {output[1]}", file=sys.stderr)
    return summary


def _report(summary: RunSummary) -> None:
    if "blueprints" in summary.phases:
        funnel = summary.counts["blueprints"]
        by_round = ", ".join(f"round {round}: {n}" for round, n in funnel["accepted_by_round"].items()) or "none"
        print(
            f"{summary.proposed} proposals run, {summary.proposals_skipped} already done; {funnel['proposals']} "
            f"proposals in {funnel['proposed']} rounds: accepted {funnel['proposals_accepted']} ({by_round}), "
            f"rejected {funnel['proposals_rejected']} ({funnel['decontaminated']} by decontamination, "
            f"{funnel['deduplicated']} as duplicates), failed {funnel['proposals_failed']}",
            file=sys.stderr,
        )
    if "trajectories" in summary.phases:
        counts = summary.counts["trajectories"]
        print(
            f"{summary.played} trials played, {summary.skipped} already done; accepted {counts['accepted']}, "
            f"rejected {counts['rejected']}, failed {counts['failed']} ({counts['unique_accepted']} unique accepted)",
            file=sys.stderr,
        )
    for endpoint, fallbacks in summary.fallbacks.items():
        print(f"endpoint fallbacks of {endpoint}: {'; '.join(fallbacks)}", file=sys.stderr)
    print(f"in {summary.wall_s:.0f}s -> {summary.output}", file=sys.stderr)


def _plan(
    config: RunConfig, config_path: Path, *, domain: str | None, limit: int | None, exclude: Path | None
) -> ProposalPlan:
    """What Phase 1 proposes: the config's domains (or the one asked for), their databases, the excluded tasks."""
    from apigen_mt.pipeline.proposals import ProposalPlan, load_excluded_tasks, planned_domain
    from apigen_mt.simulators.domain import DataError

    generation = config.blueprint_generation
    if generation is None:
        raise CliError(
            f"{config_path} has no blueprint_generation section to say what Phase 1 proposes; add e.g. "
            "`blueprint_generation: {domains: [{domain: retail, proposals: 8}]}`"
        )
    excluded = ()
    if exclude is not None:
        try:
            excluded = load_excluded_tasks(exclude)
        except ValueError as exc:  # InputError included: a missing, unreadable or non-JSON file
            raise CliError(f"--exclude-tasks: {exc}") from None
    entries = [entry for entry in generation.domains if domain is None or entry.domain == domain]
    if not entries:
        configured = ", ".join(entry.domain for entry in generation.domains)
        raise CliError(f"--domain {domain}: {config_path} proposes blueprints for {configured} only")
    planned = []
    for entry in entries:
        data_dir = None if entry.data_dir is None else source_path_dir(entry.data_dir, config_path)
        proposals = entry.proposals if limit is None else min(limit, entry.proposals)
        try:
            planned.append(planned_domain(entry.domain, data_dir, proposals))
        except DataError as exc:
            raise CliError(f"{config_path}: blueprint_generation ({entry.domain}): {exc}") from None
    return ProposalPlan(tuple(planned), excluded)


def _load(domain: str, path: Path | str, data_dir: Path | None, limit: int | None, where: str = "") -> LoadedSource:
    try:
        return load_source(domain, path, data_dir=data_dir, limit=limit)
    except SourceError as exc:
        raise CliError(f"{where}{exc}") from None


@app.command()
def trajectories(
    config: ConfigArg,
    blueprints: Annotated[Path, typer.Option("--blueprints", help="Blueprints (JSON Lines or a JSON array).")],
    domain: Annotated[
        str | None, typer.Option("--domain", help="Their domain; default: the config's first blueprint source's.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="tau-bench-layout data folder.")] = None,
    output: OutputOpt = None,
    limit: LimitOpt = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Phase 2 on a file of blueprints: simulated episodes, verification, rejection sampling, Parquet shards."""
    from apigen_mt.pipeline.run import PHASE2_ROLES, run_trajectories

    run_config = _config(config)
    if domain is None:
        if not run_config.blueprints:
            raise CliError(f"say which domain the blueprints are for with --domain ({config} has no blueprint sources)")
        domain = run_config.blueprints[0].domain
    source = _load(domain, blueprints, data_dir, limit)
    _run(
        run_config, config, PHASE2_ROLES, lambda options: run_trajectories(run_config, [source], options),
        _output(config, output), trials=trials, force=force, quiet=quiet,
    )  # fmt: skip


@app.command("blueprints")
def blueprints_command(
    config: ConfigArg,
    output: OutputOpt = None,
    limit: LimitOpt = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Only this domain of the config's blueprint_generation.")
    ] = None,
    exclude_tasks: ExcludeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Phase 1: propose blueprints, validate, review and revise them; every round a row of OUT/blueprints."""
    from apigen_mt.pipeline.run import PHASE1_ROLES, run_blueprints

    run_config = _config(config)
    plan = _plan(run_config, config, domain=domain, limit=limit, exclude=exclude_tasks)
    _run(
        run_config, config, PHASE1_ROLES, lambda options: run_blueprints(run_config, plan, options),
        _output(config, output), trials=None, force=force, quiet=quiet,
    )  # fmt: skip


@app.command()
def generate(
    config: ConfigArg,
    output: OutputOpt = None,
    limit: LimitOpt = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    exclude_tasks: ExcludeOpt = None,
) -> None:
    """The main job: Phase 1 when the config has blueprint_generation (else its blueprint sources), Phase 2 on
    the blueprints, then the dataset export."""
    from apigen_mt.pipeline.run import PHASE1_ROLES, PHASE2_ROLES, run_generate, run_trajectories

    run_config = _config(config)
    out, remote = _output(config, output)
    sources = _config_sources(run_config, config, limit)
    if run_config.blueprint_generation is not None:
        plan = _plan(run_config, config, domain=None, limit=limit, exclude=exclude_tasks)
        summary = _run(
            run_config, config, PHASE1_ROLES + PHASE2_ROLES,
            lambda options: run_generate(run_config, plan, options, sources=sources),
            (out, remote), trials=trials, force=force, quiet=quiet,
        )  # fmt: skip
        if summary.counts["trajectories"]["trials"] == 0:
            raise CliError(
                f"Phase 1 accepted no blueprint and {config} names no blueprint files, so Phase 2 had nothing to "
                f"play and there is nothing to export; each proposal's reasons are in {out / 'blueprints'}: raise "
                "the proposals or use a stronger proposer"
            )
        _export(out, remote)
        return
    if exclude_tasks is not None:
        raise CliError(
            f"--exclude-tasks filters Phase 1's blueprints, and {config} has no blueprint_generation section; "
            "drop the option or add the section"
        )
    if not sources:
        raise CliError(f"{config}: `blueprints` names no source; add e.g. `blueprints: [{{domain: retail, path: 'examples:retail'}}]`")
    _run(
        run_config, config, PHASE2_ROLES, lambda options: run_trajectories(run_config, sources, options),
        (out, remote), trials=trials, force=force, quiet=quiet,
    )  # fmt: skip
    _export(out, remote)


def _config_sources(run_config: RunConfig, config: Path, limit: int | None) -> list[LoadedSource]:
    """The config's `blueprints` files, loaded (each at most `limit` blueprints)."""
    return [
        _load(
            source.domain, source_path(source, config),
            None if source.data_dir is None else source_path_dir(source.data_dir, config),
            limit or source.limit, where=f"{config}: blueprints[{index}]: ",
        )  # fmt: skip
        for index, source in enumerate(run_config.blueprints)
    ]


def _export(out: Path, remote: RemoteRun | None) -> None:
    from apigen_mt.pipeline.cli_export import report_export
    from apigen_mt.pipeline.export import SPLITS, ExportError, export_run
    from apigen_mt.pipeline.storage import RunFolderError

    try:
        result = export_run(out)
        if remote is not None:
            remote.push_export()
    except (ExportError, RunFolderError) as exc:
        raise CliError(str(exc)) from None
    report_export(result, SPLITS, remote)


def source_path_dir(data_dir: str, config_path: Path) -> Path:
    path = Path(data_dir).expanduser()
    return path if path.is_absolute() else config_path.parent / path
