"""Policy rules of this domain as code (being written)."""

RULES: list = []
