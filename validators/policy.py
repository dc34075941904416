"""Policy stage: run the domain's mechanically checkable rules over an executed trace.

Each violation is reported as `[RULE] message`. Which rules exist, and how they treat a blueprint (ground
truth without the agent's reads) versus an episode, is documented with each domain's `rules.py`.
"""

from __future__ import annotations

from apigen_mt.simulators.domain import Domain, PolicyViolation
from apigen_mt.simulators.trace import ActionTrace
from apigen_mt.simulators.types import Verdict

STAGE = "policy"


def check_policy(domain: Domain, trace: ActionTrace) -> Verdict:
    reasons = []
    for rule in domain.rules:
        try:
            messages = rule.check(trace)
        except Exception as exc:  # a rule that cannot read this trace must not pass it silently
            messages = [f"the check crashed on this trace ({type(exc).__name__}: {exc}); treat as a bug in the rule"]
        reasons.extend(str(PolicyViolation(rule.id, message)) for message in messages)
    return Verdict(stage=STAGE, passed=not reasons, reasons=reasons, details={"rules": [rule.id for rule in domain.rules]})
