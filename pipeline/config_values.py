"""What a run config's YAML may hold before pydantic reads it: JSON's values, finite, nested a few levels, and
small once YAML's aliases are expanded.

An alias (`*name`) repeats the value its anchor (`&name`) marks, so ten lines of aliases of aliases stand for a
billion values (an "alias bomb"). Nothing expands them until the config is written out (its fingerprint, the
run's manifest), and free-form fields (`engine_kwargs`, `chat_template_kwargs`) take any value, so the whole
config is measured here, each shared value once, before anything else reads it.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Characters of the config as JSON, aliases expanded: the shipped configs have a few thousand.
MAX_CONFIG_CHARS = 1_000_000
# Levels of lists and mappings: a config nests a few, engine arguments a few more.
MAX_DEPTH = 100


class UnfitValue(ValueError):
    """The config holds a value no run can use; the message says where (a dotted path, as pydantic's)."""


def config_json(raw: Any) -> str:
    """The config as JSON text, for pydantic to read strictly; UnfitValue when it holds what JSON does not (a date,
    a key that is not text, NaN or infinity), contains itself, nests too deeply or is too large."""
    sizes = _JsonSizes()
    if sizes.of(raw, "", 0) > MAX_CONFIG_CHARS:
        where, size = _largest_field(raw, sizes)
        raise UnfitValue(
            f"{where} is about {size:,} characters as JSON once its YAML aliases are expanded; a run config holds at "
            f"most {MAX_CONFIG_CHARS:,}"
        )
    return json.dumps(raw)


class _JsonSizes:
    """Sizes of values as JSON text, each list or mapping measured once however many aliases repeat it."""

    def __init__(self) -> None:
        self.measured: dict[int, int] = {}
        self.levels: dict[int, int] = {}  # of lists and mappings, in each measured one and below
        self.open: dict[int, str] = {}  # where each list or mapping being measured is, to find one inside itself

    def of(self, value: Any, where: str, depth: int) -> int:
        if isinstance(value, str):
            return len(value) + 2
        if value is None or isinstance(value, (bool, int)):
            return len(json.dumps(value))
        place = where or "the config"
        if isinstance(value, float):
            if not math.isfinite(value):
                raise UnfitValue(f"{place}: {value} is not a number a run can use; give a finite one")
            return len(repr(value))
        if not isinstance(value, (dict, list)):
            raise UnfitValue(
                f"{place}: YAML reads this as a {type(value).__name__}, which a config cannot hold (it holds text, "
                "numbers, true/false, null, lists and mappings); quote it to make it text"
            )
        if id(value) in self.open:
            raise UnfitValue(f"{self.open[id(value)]} contains itself (an alias inside what its anchor marks)")
        # An alias can put a measured value deeper than where it was measured first.
        if depth + self.levels.get(id(value), 1) > MAX_DEPTH:
            raise UnfitValue(f"{place} nests more than {MAX_DEPTH} levels of lists and mappings")
        if id(value) in self.measured:
            return self.measured[id(value)]
        self.open[id(value)] = place
        total, levels = 1 + len(value), 1  # the brackets and the commas; this level
        for name, child in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(value, dict):
                if not isinstance(name, str):
                    raise UnfitValue(f"{place}: the key {name!r} is not text; quote it")
                total += len(name) + 3
            total += self.of(child, f"{where}.{name}" if where else str(name), depth + 1)
            levels = max(levels, 1 + self.levels.get(id(child), 0))
        del self.open[id(value)]
        self.measured[id(value)], self.levels[id(value)] = total, levels
        return total


def _largest_field(config: dict[str, Any], sizes: _JsonSizes) -> tuple[str, int]:
    """The deepest key whose value alone is too large, following each mapping's largest value, and that size."""
    where, value = "the config", config
    while isinstance(value, dict) and value:
        name, child = max(value.items(), key=lambda item: sizes.of(item[1], "", 0))
        if sizes.of(child, "", 0) <= MAX_CONFIG_CHARS:
            break
        where, value = name if value is config else f"{where}.{name}", child
    return where, sizes.of(value, "", 0)
