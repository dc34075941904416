"""tau-bench's state hash (spec taubench-domains.md section 1.5), for tests that compare the environments'
states with the hashes tau-bench publishes; the pipeline itself compares states by `state_digest`."""

from __future__ import annotations

import hashlib
from typing import Any


def _tupled(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((key, _tupled(item)) for key, item in value.items()))
    if isinstance(value, list):
        return tuple(_tupled(item) for item in value)
    return value


def taubench_hash(state: Any) -> str:
    """SHA-256 of `str()` of the state's nested-tuple form: dicts as key-sorted pairs, lists in order."""
    return hashlib.sha256(str(_tupled(state)).encode()).hexdigest()
