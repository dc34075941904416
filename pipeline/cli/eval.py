"""`apigen-mt eval`: a config's agent on a task set, and its report (`pipeline.eval`); `--compare` puts finished
eval runs side by side."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from apigen_mt.pipeline.cli.app import MAIN_JOB, CliError, app


@app.command(
    "eval",
    rich_help_panel=MAIN_JOB,
    help="Evaluate the config's agent on a task set (tau-bench or tau2 task file, a run's accepted blueprints): every "
    "task played --trials times as `trajectories` plays them, then OUT/eval.json and OUT/README.md (pass^k by the "
    "benchmark's reward and by our acceptance, with 95% intervals). `eval --compare RUN RUN ...` compares eval runs.",
)
def eval_command(
    arguments: Annotated[
        list[Path] | None,
        typer.Argument(metavar="CONFIG | RUN...", help="Run config (YAML); with --compare, the eval run folders."),
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option(
            "--tasks",
            help="Task set: a task file (tau-bench's, tau2-bench's, JSON Lines of blueprints; any `validate` input) "
            "or a run folder, whose accepted blueprints are played.",
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="A tau2 task file's split (its split_tasks.json), e.g. test.")
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="The tasks' domain when the task set does not name it (default: the config's)."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="tau-bench-layout data folder.")] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="K: episodes per task, pass^1..K (default: the config's).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", help="Eval run folder (default: runs/CONFIG_NAME-eval); with --compare, where to write it."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Play at most N tasks.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Add to a run folder made with a different config instead of refusing.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    compare: Annotated[
        bool, typer.Option("--compare", help="Compare the eval run folders given as arguments in one table.")
    ] = False,
) -> None:
    given = list(arguments or [])
    if compare:
        new_run = {"--tasks": tasks, "--split": split, "--domain": domain, "--data-dir": data_dir, "--trials": trials}
        named = [name for name, value in new_run.items() if value is not None] + ["--limit"] * (limit is not None)
        if named:
            raise CliError(f"--compare reads finished eval runs; {', '.join(named)} belong to a new eval: drop them")
        _compare(given, None if output is None else Path(output))
        return
    if not given:
        raise CliError("eval needs the run config: apigen-mt eval CONFIG --tasks SOURCE (or --compare RUN RUN ...)")
    if len(given) > 1:
        raise CliError(f"eval takes one CONFIG, got {len(given)} arguments; to compare eval runs add --compare")
    if tasks is None:
        raise CliError("eval needs the task set to play: --tasks FILE_OR_RUN_FOLDER")
    config = given[0]
    _evaluate(
        config,
        tasks,
        Path("runs") / f"{config.stem}-eval" if output is None else output,
        split=split,
        domain=domain,
        data_dir=data_dir,
        trials=trials,
        limit=limit,
        force=force,
        progress=not quiet,
    )


def _evaluate(config: Path, tasks: Path, output: str | Path, **arguments: Any) -> None:
    from apigen_mt.pipeline.eval.evaluate import EvalError, evaluate

    try:
        result = evaluate(config, tasks, output, command=tuple(sys.argv), **arguments)
    except EvalError as exc:
        raise CliError(str(exc)) from None
    summary, report = result.summary, result.report
    again = f" ({summary.replayed} of them again after a system failure)" if summary.replayed else ""
    print(f"{summary.played} trials played{again}, {summary.skipped} already done", file=sys.stderr)
    for name, figures in report["domains"].items():
        first = figures["pass_by_reward"][:1] + figures["pass_by_acceptance"][:1]
        scores = (
            f"pass^1 {first[0]['value']:.3f} by reward, {first[1]['value']:.3f} accepted" if first else "none scored"
        )
        unscored = figures["unscored_system_failures"]
        print(
            f"{name}: {figures['tasks']} tasks, {figures['scored_trials']} trials scored"
            f"{f' ({unscored} failed by the system, not scored)' if unscored else ''}: {scores}",
            file=sys.stderr,
        )
    print(f"in {summary.wall_s:.0f}s -> {result.paths[0]}, {result.paths[1]}", file=sys.stderr)


def _compare(runs: list[Path], output: Path | None) -> None:
    from apigen_mt.pipeline.eval.compare import CompareError, compare_runs, render_comparison, write_comparison
    from apigen_mt.pipeline.eval.report import ReportError

    try:
        comparison = compare_runs(runs)
    except (CompareError, ReportError) as exc:
        raise CliError(str(exc)) from None
    print(render_comparison(comparison), end="")
    if output is not None:
        readme, data = write_comparison(comparison, output)
        print(f"-> {readme}, {data}", file=sys.stderr)
