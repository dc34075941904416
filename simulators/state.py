"""Database state: copies, canonical equality and digests, and a readable JSON diff."""

from __future__ import annotations

import hashlib
import json
import marshal
from typing import Any

JSON = Any


def copy_state(state: JSON) -> JSON:
    """An independent deep copy; marshal keeps key order and int/float types and is much faster than deepcopy."""
    return marshal.loads(marshal.dumps(state))


def canonical_json(state: JSON) -> str:
    """Keys sorted, lists in order, int and float kept distinct: two states are equal iff these strings are."""
    return json.dumps(state, sort_keys=True)


def state_digest(state: JSON) -> str:
    """SHA-256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(state).encode()).hexdigest()


def _pointer(path: list[str | int]) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path) if path else ""


def diff_patch(before: JSON, after: JSON) -> list[dict[str, Any]]:
    """JSON-Patch-like operations (RFC 6902 paths) turning `before` into `after`, with the old value on replace.

    Written here rather than taken from `jsonpatch` because that library treats `91` and `91.0` as equal,
    and a gift-card balance turning from int to float is a real state change in these domains.
    """
    ops: list[dict[str, Any]] = []
    _diff(before, after, [], ops)
    return ops


def _identical(a: JSON, b: JSON) -> bool:
    # `==` runs in C but calls 91 and 91.0 equal; equal marshal bytes mean the same types too. Unequal bytes
    # (key order, shared objects) only make the diff look closer, which finds no operation there.
    if a is b:
        return True
    if a != b:
        return False
    try:
        return marshal.dumps(a) == marshal.dumps(b)
    except ValueError:  # nested too deeply for marshal: let the walk decide
        return False


def _diff(before: JSON, after: JSON, path: list[str | int], ops: list[dict[str, Any]]) -> None:
    if _identical(before, after):
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key, old in before.items():
            if key not in after:
                ops.append({"op": "remove", "path": _pointer([*path, key]), "old": old})
            else:
                _diff(old, after[key], [*path, key], ops)
        for key, new in after.items():
            if key not in before:
                ops.append({"op": "add", "path": _pointer([*path, key]), "value": new})
        return
    if isinstance(before, list) and isinstance(after, list):
        shared = min(len(before), len(after))
        for index in range(shared):
            _diff(before[index], after[index], [*path, index], ops)
        for index in range(shared, len(after)):
            ops.append({"op": "add", "path": _pointer([*path, index]), "value": after[index]})
        for index in range(len(before) - 1, shared - 1, -1):
            ops.append({"op": "remove", "path": _pointer([*path, index]), "old": before[index]})
        return
    ops.append({"op": "replace", "path": _pointer(path), "old": before, "value": after})
