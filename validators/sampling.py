"""Rejection sampling: which successful trajectories are the same, and pass^k over repeated trials.

pass^k is tau-bench's estimator: for a blueprint with n trials of which c succeeded, the chance that k
trials drawn without replacement all succeeded is C(c, k) / C(n, k); pass^k overall is the mean over
blueprints. A blueprint with fewer than k trials gives no estimate for that k and is left out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

from apigen_mt.simulators.trace import content_text, plain_messages, tool_calls_of
from apigen_mt.simulators.types import Message


def blueprint_pass_hat_k(outcomes: Sequence[bool], k: int) -> float:
    """C(c, k) / C(n, k) for one blueprint's trial outcomes (True = success)."""
    if k < 1:
        raise ValueError(f"pass^k needs k >= 1, got k = {k}")
    if len(outcomes) < k:
        raise ValueError(f"pass^{k} needs at least {k} trials, got {len(outcomes)}")
    return comb(sum(outcomes), k) / comb(len(outcomes), k)


def pass_hat_k(results: Mapping[str, Sequence[bool]], k: int) -> float:
    """Mean of `blueprint_pass_hat_k` over the blueprints (id -> trial outcomes) that have at least k trials."""
    if k < 1:
        raise ValueError(f"pass^k needs k >= 1, got k = {k}")
    scores = [blueprint_pass_hat_k(outcomes, k) for outcomes in results.values() if len(outcomes) >= k]
    if not scores:
        most = max(map(len, results.values()), default=0)
        raise ValueError(f"pass^{k} needs a blueprint with at least {k} trials; the most any has is {most}")
    return sum(scores) / len(scores)


def trajectory_signature(messages: Sequence[Mapping[str, Any] | Message]) -> str:
    """SHA-256 of what the agent did: its tool calls (decoded arguments) and text replies, in order.

    Call ids, whitespace inside argument JSON and the user's wording do not count, so two episodes in
    which the agent made the same calls and said the same things get the same signature.
    """
    steps: list[dict[str, Any]] = []
    for message in plain_messages(messages):
        if message.get("role") != "assistant":
            continue
        reply = content_text(message).strip()
        if reply:
            steps.append({"reply": reply})
        steps.extend({"call": {"name": call.name, "arguments": call.arguments}} for call in tool_calls_of(message))
    canonical = json.dumps(steps, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
