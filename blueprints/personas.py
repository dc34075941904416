"""The persona pool of the persona sampler: short personas the project generates and ships as package data.

`personas.json` is written by `scripts/make_personas.py` (seeded, reproducible); nothing is downloaded.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files


@cache
def _pool() -> tuple[str, ...]:
    return tuple(json.loads(files(__package__).joinpath("personas.json").read_text(encoding="utf-8")))


def load_personas() -> list[str]:
    """Every persona of the shipped pool, in file order (a persona's index is its id)."""
    return list(_pool())
