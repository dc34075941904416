"""`apigen-mt parse`: read raw model output as tool calls and text, the way vLLM's tool parser would."""

from __future__ import annotations

import typer

from apigen_mt.pipeline.cli.app import CHECKS, CliError, app
from apigen_mt.pipeline.renamed import warn_renamed
from apigen_mt.pipeline.store.io import dumps_strict, read_stdin, split_json_lines
from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.tool_parsers import ParsedOutput, get_parser, json_kind, parser_names

DEFAULT_PARSER = "xlam"


def _record(parsed: ParsedOutput) -> str:
    calls = [{"name": call.name, "arguments": call.arguments} for call in parsed.tool_calls]
    return dumps_strict({"tool_calls": calls, "content": parsed.content})


def _jsonl_inputs(text: str) -> list[str]:
    inputs = []
    for number, line in split_json_lines(text):
        try:
            value = loads_strict(line, f"line {number} of stdin")
        except StrictJSONError as exc:
            raise CliError(f"{exc}; with --jsonl each line must be a JSON string") from None
        if not isinstance(value, str):
            raise CliError(
                f"line {number} of stdin holds a JSON {json_kind(value)}, not a string; "
                "with --jsonl each line must be one model output as a JSON string"
            )
        inputs.append(value)
    return inputs


@app.command("parse", rich_help_panel=CHECKS)
def parse(
    parser_name: str | None = typer.Option(
        None,
        "--parser",
        help=f"the tool-call parser to read the output with: {', '.join(parser_names())}; default: {DEFAULT_PARSER}",
    ),
    jsonl: bool = typer.Option(False, "--jsonl", help="stdin holds one JSON string per line, each one model output"),
    former_format: str | None = typer.Option(None, "--format", hidden=True, help="Former name of --parser."),
) -> None:
    """Parse model output from stdin into tool calls and text; print one JSON object per output.

    Without --jsonl the whole of stdin, trailing newline included, is one output. Each output prints
    as {"tool_calls": [{"name", "arguments"}], "content": str|null}.
    """
    if former_format is not None:
        if parser_name is not None:
            raise CliError("--format is the former name of --parser; give --parser only")
        warn_renamed("parse", "--format", "--parser")  # on stderr: scripts read stdout
        parser_name = former_format
    try:
        parser = get_parser(parser_name or DEFAULT_PARSER)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    text = read_stdin()
    for output in _jsonl_inputs(text) if jsonl else [text]:
        typer.echo(_record(parser.parse(output)))
