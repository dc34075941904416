"""`apigen-mt trajectories` and `apigen-mt generate`: the main job, through the one run driver."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from apigen_mt.pipeline.cli import CliError, app
from apigen_mt.pipeline.config import ConfigError, RunConfig, load_config, source_path
from apigen_mt.pipeline.sources import LoadedSource, SourceError, load_source

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/local-cpu.yaml.")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", help="Run folder (shards, manifest, dataset); default: runs/CONFIG_NAME.")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Take at most N blueprints from each source.")]
TrialsOpt = Annotated[
    int | None, typer.Option("--trials", min=1, help="Episodes per blueprint (default: the config's trajectories.trials).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Add to a run folder made with a different config instead of refusing.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]


def _config(path: Path) -> RunConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _output(config_path: Path, output: Path | None) -> Path:
    return output if output is not None else Path("runs") / config_path.stem


def _run(config: RunConfig, config_path: Path, sources: list[LoadedSource], output: Path, *, trials, force, quiet) -> None:
    from apigen_mt.pipeline.engines import preflight
    from apigen_mt.pipeline.models import ModelError
    from apigen_mt.pipeline.openai_backend import EndpointUnavailable
    from apigen_mt.pipeline.run import PHASE2_ROLES, RunOptions, report, run_trajectories
    from apigen_mt.pipeline.storage import RunFolderError
    from apigen_mt.pipeline.vllm_backend import EngineStartError

    try:
        preflight(config, PHASE2_ROLES)
        options = RunOptions(output=output, force=force, trials=trials, progress=not quiet, command=tuple(sys.argv))
        summary = run_trajectories(config, sources, options)
    except (RunFolderError, ConfigError, ModelError, EndpointUnavailable, EngineStartError) as exc:
        raise CliError(f"{config_path}: {exc}" if isinstance(exc, EndpointUnavailable) else str(exc)) from None
    report(summary)


def _load(domain: str, path: Path | str, data_dir: Path | None, limit: int | None) -> LoadedSource:
    try:
        return load_source(domain, path, data_dir=data_dir, limit=limit)
    except SourceError as exc:
        raise CliError(str(exc)) from None


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
    run_config = _config(config)
    if domain is None:
        if not run_config.blueprints:
            raise CliError(f"say which domain the blueprints are for with --domain ({config} has no blueprint sources)")
        domain = run_config.blueprints[0].domain
    source = _load(domain, blueprints, data_dir, limit)
    _run(run_config, config, [source], _output(config, output), trials=trials, force=force, quiet=quiet)


@app.command()
def generate(
    config: ConfigArg,
    output: OutputOpt = None,
    limit: LimitOpt = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The main job: trajectories for the config's blueprint sources, then the dataset export."""
    from apigen_mt.pipeline.cli_export import report_export
    from apigen_mt.pipeline.export import SPLITS, ExportError, export_run
    from apigen_mt.pipeline.storage import RunFolderError

    run_config = _config(config)
    if not run_config.blueprints:
        raise CliError(f"{config}: `blueprints` names no source; add e.g. `blueprints: [{{domain: retail, path: 'examples:retail'}}]`")
    sources = []
    for index, source in enumerate(run_config.blueprints):
        data_dir = None if source.data_dir is None else source_path_dir(source.data_dir, config)
        try:
            sources.append(load_source(source.domain, source_path(source, config), data_dir=data_dir, limit=limit or source.limit))
        except SourceError as exc:
            raise CliError(f"{config}: blueprints[{index}]: {exc}") from None
    out = _output(config, output)
    _run(run_config, config, sources, out, trials=trials, force=force, quiet=quiet)
    try:
        result = export_run(out)
    except (ExportError, RunFolderError) as exc:
        raise CliError(str(exc)) from None
    report_export(result, SPLITS)


def source_path_dir(data_dir: str, config_path: Path) -> Path:
    path = Path(data_dir).expanduser()
    return path if path.is_absolute() else config_path.parent / path
