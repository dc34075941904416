"""The API sampler: random walks on a domain's API dependency graph that end in write tools.

A walk is read tools followed by one to `max_writes` write tools. It starts at a write drawn uniformly among
the writes it may use (those some user can make) and walks the graph backwards, from each tool to a read
tool that feeds it (an edge `read -> tool`), for a drawn number of steps or until no unvisited read feeds
the tool. Reversed, that is a path of edges ending in the first write. Each further write is drawn among the
writes fed by a read on the path, so every tool of the walk gets its inputs from a tool before it. Reads only
say how the data can be reached; the proposer's actions need not repeat them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from apigen_mt.simulators.domain import ApiEdge
from apigen_mt.simulators.types import ToolSpec


def feeders(graph: Sequence[ApiEdge], specs: dict[str, ToolSpec]) -> dict[str, list[str]]:
    """Tool -> the read tools with an edge into it, in graph order; edges naming unknown tools are ignored."""
    fed: dict[str, list[str]] = {}
    for edge in graph:
        source = specs.get(edge.source)
        if source is None or source.writes or edge.target not in specs:
            continue
        sources = fed.setdefault(edge.target, [])
        if edge.source not in sources:
            sources.append(edge.source)
    return fed


def random_walk(
    graph: Sequence[ApiEdge],
    specs: dict[str, ToolSpec],
    rng: random.Random,
    *,
    writes: Sequence[str],
    reads: tuple[int, int],
    max_writes: int,
) -> list[str]:
    """Tool names: a path of reads (between `reads[0]` and `reads[1]` of them where the graph is deep enough)
    ending in one of `writes`, then up to `max_writes - 1` more of `writes`, each fed by a read of the path."""
    fed = feeders(graph, specs)
    first = rng.choice(writes)
    path: list[str] = []
    current, steps = first, rng.randint(*reads)
    while len(path) < steps:
        options = [name for name in fed.get(current, []) if name not in path]
        if not options:
            break
        current = rng.choice(options)
        path.insert(0, current)
    chosen = [first]
    for _ in range(rng.randint(1, max_writes) - 1):
        options = [name for name in writes if name not in chosen and set(fed.get(name, [])) & set(path)]
        if not options:
            break
        chosen.append(rng.choice(options))
    return path + chosen
