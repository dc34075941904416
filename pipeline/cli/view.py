"""`apigen-mt view RUN_DIR`: look at a run in the browser, while it writes or after; `--static FILE.html` writes
the overview and a sample of trials as one file instead."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from apigen_mt.pipeline.cli.app import MAIN_JOB, CliError, app

DEFAULT_PORT = 8765
HOST = "127.0.0.1"  # the viewer serves this machine only: it shows whatever the run folder holds


@app.command("view", rich_help_panel=MAIN_JOB)
def view(
    run_dir: Annotated[
        str, typer.Argument(help="Run folder written by `apigen-mt generate` (or the URI given as its --output).")
    ],
    port: Annotated[int, typer.Option("--port", help="Serve on this port of 127.0.0.1 (0: any free port).")] = (
        DEFAULT_PORT
    ),
    static: Annotated[
        Path | None,
        typer.Option("--static", help="Write one self-contained HTML file (overview and sample trials) and exit."),
    ] = None,
) -> None:
    """Look at a run: overview charts, the trials table, each trial's conversation, each blueprint's rounds."""
    if not 0 <= port <= 65535:
        raise CliError(f"--port {port} is not a port number (0 to 65535)")
    # Imported here: polars, pyarrow and the web stack would slow down every other command's start.
    from apigen_mt.pipeline.store.remote import RemoteError
    from apigen_mt.pipeline.store.run_folder import RunFolder
    from apigen_mt.pipeline.store.shards import RunFolderError
    from apigen_mt.pipeline.view.index import RunIndex

    try:
        run = RunFolder.at(run_dir)
        run.refuse_a_file()
        run.pull()
        if not run.path.is_dir():
            raise CliError(f"run folder {run} does not exist; give the --output of a run")
        index = RunIndex(run)
        if static is not None:
            from apigen_mt.pipeline.view.static_page import write_static

            shown = write_static(index, static)
            print(f"wrote {static}: the overview and {shown} trial(s)", file=sys.stderr)
            return
        index.snapshot()  # a damaged shard is one line now, not a page later
    except (RunFolderError, RemoteError) as exc:
        raise CliError(str(exc)) from None
    serve(index, port)


def serve(index, port: int) -> None:
    import uvicorn

    from apigen_mt.pipeline.view.app import create_app

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((HOST, port))
    except OSError as exc:
        listener.close()
        raise CliError(f"cannot serve on {HOST}:{port}: {exc.strerror or exc}; give another --port") from None
    # Listening before the URL is printed: a browser (or a test) that connects at once waits in the backlog until
    # uvicorn accepts, instead of being refused.
    listener.listen(128)
    bound = listener.getsockname()[1]
    print(f"viewing {index.run} at http://{HOST}:{bound}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(index), log_level="warning"))
    server.run(sockets=[listener])
