"""The persona pool of the persona sampler: short personas the project generates and ships as package data.

`personas.json` is written by `scripts/make_personas.py` (seeded, reproducible); nothing is downloaded.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from apigen_mt.simulators.types import Blueprint


@cache
def _pool() -> tuple[str, ...]:
    return tuple(json.loads(files(__package__).joinpath("personas.json").read_text(encoding="utf-8")))


def load_personas() -> list[str]:
    """Every persona of the shipped pool, in file order (a persona's index is its id)."""
    return list(_pool())


def persona_of(blueprint: Blueprint) -> str | None:
    """The persona Phase 1 gave the blueprint's customer (its `persona:<index>` context id), for the Phase 2 human;
    None for blueprints from files and for an index the shipped pool does not have."""
    for context_id in blueprint.provenance.context_ids:
        kind, _, index = context_id.partition(":")
        if kind == "persona" and index.isdigit() and int(index) < len(_pool()):
            return _pool()[int(index)]
    return None
