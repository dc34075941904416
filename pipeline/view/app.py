"""The viewer's web app (Starlette): read-only pages over one run folder, and `/api/version`, which the pages poll
to show new shards by themselves. Pages are Jinja2 templates rendered on the server; charts are inline SVG; the
CSS and the one small script are package data served from `/static`: nothing is fetched from the network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from apigen_mt.pipeline.export.charts import phase1_funnel
from apigen_mt.pipeline.store.shards import RunFolderError
from apigen_mt.pipeline.view import svg
from apigen_mt.pipeline.view.index import RunIndex
from apigen_mt.pipeline.view.pages import NotFound, blueprint_page, trial_page
from apigen_mt.pipeline.view.queries import TrialQuery, blueprints_page, facets, overview, trials_page

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"


def environment() -> jinja2.Environment:
    """The templates, HTML-escaped, with the chart drawers."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(svg=svg, phase1_funnel=phase1_funnel)
    env.filters["pretty"] = pretty_json
    return env


def pretty_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


class Links:
    """The app's URLs, as the templates write them."""

    static = False

    def trial(self, blueprint_id: str, trial: int) -> str | None:
        return "/trial?" + urlencode({"blueprint": blueprint_id, "trial": trial})

    def blueprint(self, blueprint_id: str) -> str | None:
        return "/blueprint?" + urlencode({"id": blueprint_id})

    def trials(self, query: TrialQuery | None = None, **changes: Any) -> str:
        values = (query.model_dump() if query is not None else {}) | changes
        kept = {
            name: value
            for name, value in values.items()
            if value not in ("", None, False) and value != TrialQuery.model_fields[name].default
        }
        return "/trials" + ("?" + urlencode(kept) if kept else "")


def create_app(index: RunIndex) -> Starlette:
    """The app over one run folder."""
    env = environment()
    links = Links()

    def render(name: str, snapshot_version: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            run_name=str(index.run), version=snapshot_version, static=False, links=links, **context
        )
        return HTMLResponse(html, status_code=status)

    def problem(status: int, message: str) -> HTMLResponse:
        return render("problem.html", "", status=status, title="Not shown", message=message, live=False)

    def page(handler):
        def endpoint(request: Request) -> Response:
            try:
                return handler(request)
            except NotFound as exc:
                return problem(404, str(exc))
            except (ValidationError, ValueError) as exc:
                return problem(400, _one_line(exc))
            except RunFolderError as exc:
                return problem(500, str(exc))

        return endpoint

    @page
    def overview_page(request: Request) -> Response:
        snapshot = index.snapshot()
        return render(
            "overview.html", snapshot.version, title="Overview", live=True, snapshot=snapshot, data=overview(snapshot)
        )

    @page
    def trials(request: Request) -> Response:
        # An empty field of the form means "any".
        query = TrialQuery.model_validate({name: value for name, value in request.query_params.items() if value})
        snapshot = index.snapshot()
        result = trials_page(index, snapshot, query)
        return render(
            "trials.html",
            snapshot.version,
            title="Trials",
            live=not query.text,  # a search reads every conversation: not again on every new shard
            query=query,
            result=result,
            facets=facets(snapshot),
        )

    @page
    def trial(request: Request) -> Response:
        blueprint_id = request.query_params.get("blueprint", "")
        number = _integer(request.query_params.get("trial", ""), "trial")
        snapshot = index.snapshot()
        context = trial_page(index, snapshot, blueprint_id, number)
        title = f"{blueprint_id} trial {number}"
        return render("trial.html", snapshot.version, title=title, live=False, **context)

    @page
    def blueprints(request: Request) -> Response:
        number = _integer(request.query_params.get("page", "1"), "page")
        snapshot = index.snapshot()
        rows, pages = blueprints_page(snapshot, number)
        return render(
            "blueprints.html", snapshot.version, title="Blueprints", live=True, rows=rows, page=number, pages=pages
        )

    @page
    def blueprint(request: Request) -> Response:
        blueprint_id = request.query_params.get("id", "")
        snapshot = index.snapshot()
        context = blueprint_page(index, snapshot, blueprint_id)
        return render("blueprint.html", snapshot.version, title=blueprint_id, live=False, **context)

    def version(request: Request) -> Response:
        try:
            return JSONResponse({"version": index.version()}, headers={"Cache-Control": "no-store"})
        except (RunFolderError, OSError) as exc:
            return JSONResponse({"error": _one_line(exc)}, status_code=500)

    routes = [
        Route("/", overview_page),
        Route("/trials", trials),
        Route("/trial", trial),
        Route("/blueprints", blueprints),
        Route("/blueprint", blueprint),
        Route("/api/version", version),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "query"
        return f"{where}: {error['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
