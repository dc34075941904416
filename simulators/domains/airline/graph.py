"""API dependency graph of this domain (being written)."""

API_GRAPH: list = []
