"""`apigen-mt blueprints`, `trajectories` and `generate`: the main job, through its one front door
(`pipeline.api.generate`); each command parses its options, calls it and reports what the run did."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from apigen_mt.pipeline.api import GenerateError, GenerateResult, generate
from apigen_mt.pipeline.cli.app import MAIN_JOB, CliError, app, report_export
from apigen_mt.pipeline.config import load_config
from apigen_mt.pipeline.renamed import RenamedWarning, warn_renamed

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/local-cpu.yaml.")]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        help="Run folder (shards, manifest, dataset), or a filesystem URI such as s3://bucket/runs/x (staged locally, "
        "mirrored there); default: runs/CONFIG_NAME.",
    ),
]
ProposalsOpt = Annotated[
    int | None,
    typer.Option("--proposals", min=1, help="Propose at most N blueprints per domain (default: the config's)."),
]
TrialsOpt = Annotated[
    int | None,
    typer.Option("--trials", min=1, help="Episodes per task (default: the config's trajectories.trials)."),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Add to a run folder made with a different config instead of refusing.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]
ExcludeOpt = Annotated[
    Path | None,
    typer.Option(
        "--exclude-tasks",
        help="Tasks no blueprint may reproduce (any file `validate` reads, e.g. a benchmark's test tasks, tau2-bench's "
        "tasks.json): Phase 1 rejects a blueprint with the same write actions or a too similar instruction, naming "
        "the task.",
    ),
]
ExcludeSplitOpt = Annotated[
    str | None,
    typer.Option(
        "--exclude-split",
        help="Only the --exclude-tasks of this split (e.g. test), from the split_tasks.json beside the file; the "
        "manifest and the dataset card name it.",
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
        from apigen_mt.pipeline.export.dataset import SPLITS

        report_export(result.export, SPLITS, result.mirrored_to)


def _runs_phase1(config: Path) -> bool:
    """Whether `generate` runs Phase 1 on this config; silent, since the run loads the config again and warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RenamedWarning)
        return load_config(config).blueprint_generation is not None


def _report(ran: GenerateResult) -> None:
    """What the run did, on stderr."""
    summary = ran.summary
    if "blueprints" in summary.phases:
        funnel = summary.counts["proposals"]
        by_round = ", ".join(f"round {round}: {n}" for round, n in funnel["accepted_by_round"].items()) or "none"
        print(
            f"{summary.proposed} proposals run, {summary.proposals_skipped} already done; {funnel['proposals']} "
            f"proposals in {funnel['proposed']} rounds: accepted {funnel['proposals_accepted']} ({by_round}), "
            f"rejected {funnel['proposals_rejected']} ({funnel['decontaminated']} by decontamination, "
            f"{funnel['deduplicated']} as duplicates), failed {funnel['proposals_failed']}",
            file=sys.stderr,
        )
    if "trajectories" in summary.phases:
        tasks, counts = summary.counts["tasks"], summary.counts["trajectories"]
        if tasks["rejected"]:
            print(
                f"stage 1 rejected {tasks['rejected']} of {tasks['input']} tasks; their reasons are in "
                f"{summary.task_rejections}",
                file=sys.stderr,
            )
        if not tasks["valid"]:
            print(
                f"no task to play: {'stage 1 rejected every one' if tasks['input'] else 'none given'}", file=sys.stderr
            )
        again = f" ({summary.replayed} of them again after a system failure)" if summary.replayed else ""
        print(
            f"{summary.played} trials played{again}, {summary.skipped} already done; accepted {counts['accepted']}, "
            f"rejected {counts['rejected']}, failed {counts['failed']} ({counts['unique_accepted']} unique accepted)",
            file=sys.stderr,
        )
        if summary.left_failed:
            left = f"{summary.left_failed} trial{'s' if summary.left_failed > 1 else ''}"
            print(
                f"{left} left as failed: failed for a system reason on the first play and on all "
                "trajectories.max_replays replays; raise it to play again",
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
    "on the config's task files, then the dataset export.",
)
def generate_command(
    config: ConfigArg,
    output: OutputOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Take at most N tasks from each of the config's task files.")
    ] = None,
    proposals: ProposalsOpt = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    exclude_tasks: ExcludeOpt = None,
    exclude_split: ExcludeSplitOpt = None,
) -> None:
    if limit is not None and proposals is None and _runs_phase1(config):
        # Before --proposals, --limit capped Phase 1's proposals too; it still does until the next release.
        warnings.warn(
            "generate: --limit limits the tasks of each task file, and the proposals per Phase 1 domain are now "
            "--proposals N; add it (until the next release --limit without it limits the proposals too)",
            RenamedWarning,
            stacklevel=1,
        )
        proposals = limit
    _run(
        config,
        output,
        limit=limit,
        proposals=proposals,
        trials=trials,
        force=force,
        progress=not quiet,
        exclude_tasks=exclude_tasks,
        exclude_split=exclude_split,
    )


@app.command(rich_help_panel=MAIN_JOB)
def trajectories(
    config: ConfigArg,
    tasks: Annotated[
        Path | None,
        typer.Option("--tasks", help="Task file (JSON Lines or a JSON array, e.g. tau-bench's tasks_test.json)."),
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Its tasks' domain; default: the config's first task file's.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="tau-bench-layout data folder.")] = None,
    output: OutputOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Take at most N tasks from the file.")] = None,
    trials: TrialsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    blueprints: Annotated[
        Path | None, typer.Option("--blueprints", hidden=True, help="Former name of --tasks.")
    ] = None,
) -> None:
    """Phase 2 on a task file: simulated episodes, verification, rejection sampling, Parquet shards."""
    if blueprints is not None:
        if tasks is not None:
            raise CliError("--blueprints is the former name of --tasks; give --tasks only")
        warn_renamed("trajectories", "--blueprints", "--tasks")
        tasks = blueprints
    if tasks is None:
        raise CliError("trajectories needs the task file to play: --tasks FILE")
    _run(
        config,
        output,
        phases=("trajectories",),
        export=False,
        task_file=tasks,
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
    proposals: ProposalsOpt = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Only this domain of the config's blueprint_generation.")
    ] = None,
    exclude_tasks: ExcludeOpt = None,
    exclude_split: ExcludeSplitOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, hidden=True, help="Former name of --proposals.")
    ] = None,
) -> None:
    """Phase 1: propose blueprints, validate, review and revise them; every round a row of OUT/blueprints."""
    if limit is not None:
        if proposals is not None:
            raise CliError("--limit is the former name of --proposals here; give --proposals only")
        warn_renamed("blueprints", "--limit", "--proposals")
        proposals = limit
    _run(
        config,
        output,
        phases=("blueprints",),
        export=False,
        domain=domain,
        proposals=proposals,
        exclude_tasks=exclude_tasks,
        exclude_split=exclude_split,
        force=force,
        progress=not quiet,
    )
