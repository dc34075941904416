"""Policy stage: run the domain's mechanically checkable rules over an executed trace.

Each violation is reported as `[RULE] message`. Which rules exist, and how they treat a blueprint (ground
truth without the agent's reads) versus an episode, is documented with each domain's `rules.py`.

In an episode, a rule whose `refused_calls_count` is False is judged on the calls that did something: what
it finds only because of refused calls (an error observation, the database unchanged) goes to
`details["warnings"]`, marked as such, and does not fail the stage.
"""

from __future__ import annotations

from apigen_mt.simulators.domain import Domain, PolicyRule, PolicyViolation
from apigen_mt.simulators.trace import ActionTrace
from apigen_mt.simulators.types import Verdict

STAGE = "policy"
REFUSED_NOTE = "the call was refused and changed nothing"


def check_policy(domain: Domain, trace: ActionTrace) -> Verdict:
    reasons: list[str] = []
    warnings: list[str] = []
    lenient = trace.episode and any(call.refused for call in trace.calls)
    acted = trace.without_refused() if lenient else trace
    for rule in domain.rules:
        found = _run(rule, trace)
        if not lenient or rule.refused_calls_count:
            reasons.extend(str(PolicyViolation(rule.id, message)) for message in found)
            continue
        kept = _run(rule, acted)
        reasons.extend(str(PolicyViolation(rule.id, message)) for message in kept)
        warnings.extend(
            f"{PolicyViolation(rule.id, message)} ({REFUSED_NOTE})" for message in found if message not in kept
        )
    details = {"rules": [rule.id for rule in domain.rules], "warnings": warnings}
    return Verdict(stage=STAGE, passed=not reasons, reasons=reasons, details=details)


def _run(rule: PolicyRule, trace: ActionTrace) -> list[str]:
    try:
        return rule.check(trace)
    except Exception as exc:  # a rule that cannot read this trace must not pass it silently
        return [f"the check crashed on this trace ({type(exc).__name__}: {exc}); treat as a bug in the rule"]
