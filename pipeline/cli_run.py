"""`apigen-mt blueprints`, `trajectories` and `generate`: the main job, through its one front door
(`pipeline.api.generate`); each command parses its options, calls it and reports what the run did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from apigen_mt.pipeline.api import GenerateError, GenerateResult, generate
from apigen_mt.pipeline.cli_app import MAIN_JOB, CliError, app, report_export

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
    int | None,
    typer.Option("--trials", min=1, help="Episodes per blueprint (default: the config's trajectories.trials)."),
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


def _run(config: Path, output: str | None, **arguments: Any) -> None:
    """The front door on the config, into --output (default: runs/CONFIG_NAME); its reports on stderr."""
    try:
        result = generate(
            config, Path("runs") / config.stem if output is None else output, command=tuple(sys.argv), **arguments
        )
    except GenerateError as exc:
        if exc.ran is not None:  # the run finished; the export after it failed
            _report(exc.ran)
        raise CliError(str(exc)) from None
    _report(result)
    if result.export is not None:
        from apigen_mt.pipeline.export import SPLITS

        report_export(result.export, SPLITS, result.mirrored_to)


def _report(ran: GenerateResult) -> None:
    """What the run did, on stderr."""
    summary = ran.summary
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
    if ran.mirrored_to is not None:
        print(f"mirrored to {ran.mirrored_to}", file=sys.stderr)


@app.command(
    "generate",
    rich_help_panel=MAIN_JOB,
    # One line: the command list keeps a docstring's line breaks.
    help="The main job: Phase 1 when the config has blueprint_generation, Phase 2 on the blueprints it accepts and "
    "on the config's blueprint files, then the dataset export.",
)
def generate_command(
    config: ConfigArg,
    output: OutputOpt = None,
    limit: LimitOpt = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    exclude_tasks: ExcludeOpt = None,
) -> None:
    _run(config, output, limit=limit, trials=trials, force=force, progress=not quiet, exclude_tasks=exclude_tasks)


@app.command(rich_help_panel=MAIN_JOB)
def trajectories(
    config: ConfigArg,
    blueprints: Annotated[Path, typer.Option("--blueprints", help="Blueprints (JSON Lines or a JSON array).")],
    domain: Annotated[
        str | None, typer.Option("--domain", help="Their domain; default: the config's first blueprint source's.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="tau-bench-layout data folder.")] = None,
    output: OutputOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Take at most N blueprints from the file.")
    ] = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Phase 2 on a file of blueprints: simulated episodes, verification, rejection sampling, Parquet shards."""
    _run(
        config,
        output,
        phases=("trajectories",),
        export=False,
        blueprint_file=blueprints,
        domain=domain,
        data_dir=data_dir,
        limit=limit,
        trials=trials,
        force=force,
        progress=not quiet,
    )


@app.command("blueprints", rich_help_panel=MAIN_JOB)
def blueprints_command(
    config: ConfigArg,
    output: OutputOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Take at most N proposals per domain.")] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Only this domain of the config's blueprint_generation.")
    ] = None,
    exclude_tasks: ExcludeOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Phase 1: propose blueprints, validate, review and revise them; every round a row of OUT/blueprints."""
    _run(
        config,
        output,
        phases=("blueprints",),
        export=False,
        domain=domain,
        limit=limit,
        exclude_tasks=exclude_tasks,
        force=force,
        progress=not quiet,
    )
