"""Seeded generator of this domain's database (being written)."""


def generate(seed: int) -> dict:
    raise NotImplementedError("the seeded generator is being written")
