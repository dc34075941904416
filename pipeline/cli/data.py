"""LLM-free commands: `validate`, `verify`, `replay` and `envs`, usable on data from anywhere."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from apigen_mt.blueprints.task_files import read_tasks
from apigen_mt.pipeline.cli.app import CHECKS, SETUP, CliError, app
from apigen_mt.pipeline.store.io import atomic_files_in, atomic_output, dumps_strict, read_json, read_records
from apigen_mt.simulators.domain import DataError, Domain, get_domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Verdict
from apigen_mt.validators.blueprint import STAGES, parse_stages, validate_blueprint, validation_record
from apigen_mt.validators.format import STAGE as FORMAT_STAGE
from apigen_mt.validators.trajectory import TrajectoryInputError, verify_trajectory

stderr = Console(stderr=True)

DomainOpt = Annotated[str, typer.Option("--domain", help="Domain name (see `apigen-mt envs list`).")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder in tau-bench's layout; default: the domain's own seeded data."),
]
InputOpt = Annotated[Path, typer.Option("--input", help="Input file.")]
OutputOpt = Annotated[Path, typer.Option("--output", help="Output file (written only when the whole input succeeds).")]


def _domain_and_db(name: str, data_dir: Path | None) -> tuple[Domain, JSON]:
    try:
        domain = get_domain(name)
        return domain, domain.load(data_dir)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    except DataError as exc:
        raise CliError(str(exc)) from None


def _inputs(dom: Domain, input: Path, data_dir: Path | None) -> list[Path]:
    """Every file the command reads, which its output must not replace."""
    if data_dir is None:
        return [input]
    return [input, data_dir / "policy.md", *(data_dir / f"{table}.json" for table in dom.tables)]


def report(line: str) -> None:
    """A summary line on stderr, printed as is (paths may contain brackets rich would take for markup)."""
    print(line, file=sys.stderr)


@app.command(rich_help_panel=CHECKS)
def replay(domain: DomainOpt, input: InputOpt, output: OutputOpt, data_dir: DataDirOpt = None) -> None:
    """Run a JSON array of actions `[{name, arguments|kwargs}]` on a fresh database; write observations, final state."""
    dom, db = _domain_and_db(domain, data_dir)
    actions = read_json(input)
    if not isinstance(actions, list):
        raise CliError(f"{input}: expected a JSON array of actions, got a {type(actions).__name__}")
    for index, action in enumerate(actions):
        if not isinstance(action, dict) or not isinstance(action.get("name"), str):
            raise CliError(f"{input}: action {index} must be an object with a string `name`")
        arguments = action.get("arguments", action.get("kwargs", {}))
        if not isinstance(arguments, dict):
            raise CliError(f"{input}: action {index} ({action['name']}): `arguments` must be an object")
    env = dom.environment(db)
    observations = [env.step(action).observation for action in actions]
    with atomic_output(output, inputs=_inputs(dom, input, data_dir)) as out:
        out.write(dumps_strict({"observations": observations, "state": env.db}) + "\n")
    failed = sum(1 for _, result in env.log if result.failed)
    report(f"replayed {len(actions)} actions ({failed} with error observations) -> {output}")


@app.command(rich_help_panel=CHECKS)
def validate(
    domain: DomainOpt,
    input: InputOpt,
    output: OutputOpt,
    data_dir: DataDirOpt = None,
    stages: Annotated[
        str, typer.Option("--stages", help="Comma-separated stages to run, in order: format,execution,policy.")
    ] = ",".join(STAGES),
    split: Annotated[
        str | None,
        typer.Option("--split", help="Only the tasks of this split (e.g. test) of the split_tasks.json beside INPUT."),
    ] = None,
) -> None:
    """Validate blueprints (JSON Lines, or a JSON array such as tau-bench's or tau2-bench's task files); one verdict
    line per input task."""
    from apigen_mt.pipeline.run.sources import SourceError, read_split_ids, split_file

    try:
        chosen = parse_stages(stages)
    except ValueError as exc:
        raise CliError(f"--stages: {exc}") from None
    dom, db = _domain_and_db(domain, data_dir)
    try:
        split_ids = None if split is None else read_split_ids(input, split)
    except SourceError as exc:
        raise CliError(f"--split {split}: {exc}") from None
    tasks = read_tasks(read_records(input), domain=domain, db=db, split_ids=split_ids)
    inputs = _inputs(dom, input, data_dir) + ([] if split is None else [split_file(input)])
    accepted = 0
    failed_at: Counter[str] = Counter()
    with atomic_output(output, inputs=inputs) as out:
        for task in progress(tasks, f"validating {len(tasks)} blueprints"):
            verdicts = (
                [Verdict(stage=FORMAT_STAGE, passed=False, reasons=[task.problem])]
                if task.problem is not None
                else validate_blueprint(dom, db, task.record, chosen)
            )
            record = validation_record(task.index, task.record, verdicts)
            accepted += record["accepted"]
            if record["failed_stage"]:
                failed_at[record["failed_stage"]] += 1
            out.write(dumps_strict(record) + "\n")
    rejected = ", ".join(f"{count} at {stage}" for stage, count in failed_at.items()) or "none"
    report(f"{accepted} of {len(tasks)} accepted; rejected: {rejected} -> {output}")


@app.command(rich_help_panel=CHECKS)
def verify(domain: DomainOpt, input: InputOpt, output: OutputOpt, data_dir: DataDirOpt = None) -> None:
    """Verify trajectories `{"blueprint", "messages"}` (JSON Lines): state match, expected outputs, termination."""
    dom, db = _domain_and_db(domain, data_dir)
    records = read_records(input)
    passed = accepted = warned = 0
    with atomic_output(output, inputs=_inputs(dom, input, data_dir)) as out:
        for index, raw in enumerate(progress(records, f"verifying {len(records)} trajectories")):
            if not isinstance(raw, dict) or "blueprint" not in raw or "messages" not in raw:
                raise CliError(f"{input}: record {index + 1} must be an object with `blueprint` and `messages`")
            try:
                verdict = verify_trajectory(dom, db, raw["blueprint"], raw["messages"])
            except TrajectoryInputError as exc:
                raise CliError(f"{input}: record {index + 1}: {exc}") from None
            passed += verdict.reward == 1.0
            accepted += verdict.accepted
            warned += bool(verdict.warnings)
            out.write(dumps_strict(verdict.record(index)) + "\n")
    report(
        f"{passed} of {len(records)} trajectories reach reward 1.0, {accepted} accepted, {warned} with warnings "
        f"-> {output}"
    )


envs = typer.Typer(help="Inspect the environments and generate their data.", no_args_is_help=True)
app.add_typer(envs, name="envs", rich_help_panel=SETUP)


@envs.command("list")
def envs_list() -> None:
    """List the available domains."""
    from apigen_mt.simulators.domain import domains

    for name, dom in sorted(domains().items()):
        print(f"{name}\t{len(dom.toolkit.specs())} tools\t{dom.description}")


@envs.command("show")
def envs_show(
    domain: Annotated[str, typer.Argument(help="Domain name.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print tools, rules and graph as JSON.")] = False,
) -> None:
    """Show a domain's tools, tables, policy rules and API dependency graph."""
    try:
        dom = get_domain(domain)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    if json_out:
        print(
            dumps_strict(
                {
                    "name": dom.name,
                    "description": dom.description,
                    "tables": list(dom.tables),
                    "tools": [spec.model_dump() for spec in dom.toolkit.specs()],
                    "rules": [{"id": rule.id, "summary": rule.summary} for rule in dom.rules],
                    "api_graph": [[edge.source, edge.target, edge.carries] for edge in dom.api_graph],
                },
                indent=2,
            )
        )
        return
    console = Console()
    console.print(f"[bold]{dom.name}[/bold]: {dom.description}")
    console.print(f"tables: {', '.join(dom.tables)}")
    tools = Table("tool", "kind", "parameters", title="tools")
    for spec in dom.toolkit.specs():
        kind = "terminates" if spec.terminates else "write" if spec.writes else "read"
        required = set(spec.parameters.get("required", []))
        params = ", ".join(f"{name}{'' if name in required else '?'}" for name in spec.parameters["properties"])
        tools.add_row(spec.name, kind, params)
    console.print(tools)
    if dom.rules:
        rules = Table("rule", "summary", title="policy rules checked as code")
        for rule in dom.rules:
            rules.add_row(rule.id, rule.summary)
        console.print(rules)
    if dom.api_graph:
        graph = Table("from", "to", "carries", title="API dependency graph")
        for edge in dom.api_graph:
            graph.add_row(edge.source, edge.target, edge.carries)
        console.print(graph)


@envs.command("generate-data")
def envs_generate_data(
    domain: Annotated[str, typer.Argument(help="Domain name.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (0 or more); the same seed gives identical files.")],
    output: Annotated[Path, typer.Option("--output", help="Folder to write the tau-bench-layout JSON files into.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the domain's files if the folder already holds them.")
    ] = False,
) -> None:
    """Generate a domain's database with its seeded generator, in tau-bench's file layout.

    All files appear together: they are written into a temp folder first and renamed into place only
    when every one is complete. Other files in the folder are left alone.
    """
    try:
        dom = get_domain(domain)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    if seed < 0:
        # The generators seed Python's `random`, which hashes away the sign: -1 would repeat seed 1.
        raise CliError(f"--seed must be 0 or more, got {seed}")
    db = dom.generate(seed)
    files = {f"{table}.json": dumps_strict(records, indent=2) + "\n" for table, records in db.items()}
    files["policy.md"] = dom.policy
    existing = [name for name in files if (output / name).exists()]
    if existing and not force:
        raise CliError(
            f"--output {output} already holds {', '.join(existing)}; pass --force to replace them, "
            "or choose another folder"
        )
    try:
        with atomic_files_in(output, list(files), replace=force) as staging:
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write into {output}: {exc.strerror or exc}") from None
    for table, records in db.items():
        report(f"wrote {output / f'{table}.json'} ({len(records)} records)")
    report(f"wrote {output / 'policy.md'}")


@envs.command("new")
def envs_new(
    name: Annotated[str, typer.Argument(help="Name of the new domain and of its package: a lowercase identifier.")],
    dir: Annotated[Path, typer.Option("--dir", help="Folder to create the package in.")] = Path("."),
) -> None:
    """Create a minimal domain package NAME that passes its own tests, to grow into a new environment.

    It holds tools (one of them a write), a seeded data generator with record schemas, a policy, one policy
    rule, an API graph, one example task and a test module. See docs/environments.md.
    """
    from apigen_mt.pipeline.scaffold import ScaffoldError, scaffold

    try:
        written = scaffold(name, dir)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    report(f"created {dir / name} ({len(written)} files)")
    report(f"test it: cd {dir} && python -m pytest {name}")
    report(f"use it: --domain {name} (or `domain: {name}` in a config) with {dir} on PYTHONPATH")


def progress(items: list[Any], description: str) -> Any:
    """A progress bar on stderr for long inputs; silent for short ones."""
    return track(items, description=description, console=stderr, transient=True, disable=len(items) < 200)
