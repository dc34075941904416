"""A sandboxed environment: one episode's own database copy behind a domain's tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apigen_mt.simulators.state import JSON, copy_state, diff_patch, state_digest
from apigen_mt.simulators.types import ToolCall, ToolSpec

if TYPE_CHECKING:
    from apigen_mt.simulators.domain import Domain


@dataclass(frozen=True)
class StepResult:
    """What one tool call gave back. `failed` marks error observations; `terminated` ends the episode."""

    observation: str
    failed: bool = False
    terminated: bool = False


@dataclass
class Environment:
    """Runs tool calls of one episode on a private copy of a domain's database. Never raises on a call."""

    domain: Domain
    db: JSON
    log: list[tuple[ToolCall, StepResult]] = field(default_factory=list)

    @classmethod
    def fresh(cls, domain: Domain, db: JSON) -> Environment:
        """An environment on a copy of `db`; the caller's data is never touched."""
        return cls(domain=domain, db=copy_state(db))

    @property
    def tools(self) -> list[ToolSpec]:
        return self.domain.toolkit.specs()

    def step(self, call: ToolCall | dict[str, Any]) -> StepResult:
        result = self._execute(call)
        self.log.append((call if isinstance(call, ToolCall) else _as_call(call), result))
        return result

    def _execute(self, call: ToolCall | dict[str, Any]) -> StepResult:
        toolkit_cls = self.domain.toolkit
        try:
            call = call if isinstance(call, ToolCall) else ToolCall.model_validate(call)
        except Exception as exc:  # a malformed call from a model is an observation, not a crash
            return StepResult(f"Error: malformed tool call: {_first_line(exc)}", failed=True)
        bound = toolkit_cls.tools().get(call.name)
        if bound is None:
            return StepResult(f"Unknown action {call.name}", failed=True)
        try:
            problem = toolkit_cls.argument_error(bound, call.arguments)
        except RecursionError:
            problem = f"Error: arguments of {call.name} are nested too deeply"
        if problem is not None:
            return StepResult(problem, failed=True)
        try:
            # Arguments are copied so that later changes to the caller's objects cannot reach the database.
            observation = toolkit_cls(self.db).run(call.name, copy_state(call.arguments))
        except Exception as exc:
            return StepResult(f"Error: {exc}", failed=True)
        if observation is None:
            # tau-bench crashes here (send_certificate with every id taken); flag it instead of inventing a result.
            return StepResult(f"Error: {call.name} returned no result", failed=True)
        return StepResult(observation, failed=observation.startswith("Error:"), terminated=bound.spec.terminates)

    def digest(self) -> str:
        return state_digest(self.db)

    def diff_from(self, before: JSON) -> list[dict[str, Any]]:
        return diff_patch(before, self.db)


def _as_call(call: dict[str, Any]) -> ToolCall:
    try:
        return ToolCall.model_validate(call)
    except Exception:
        name = call.get("name") if isinstance(call, dict) else None
        return ToolCall(name=name if isinstance(name, str) else "", arguments={})


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
