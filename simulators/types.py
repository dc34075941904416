"""Types shared by every layer: tool specs and calls, chat messages, blueprints, verdicts."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class ToolSpec(BaseModel):
    """What an LLM is told about a tool: its name, purpose and JSON-Schema parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]
    writes: bool = False
    terminates: bool = False

    def openai(self) -> dict[str, Any]:
        """The OpenAI `tools=` entry for this tool."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def strict_parameters(self) -> dict[str, Any]:
        """`parameters` refusing unknown top-level arguments, as the environment does."""
        if self.parameters.get("type") != "object":
            return dict(self.parameters)
        return {**self.parameters, "additionalProperties": self.parameters.get("additionalProperties", False)}

    def plain(self) -> dict[str, Any]:
        """`{name, description, parameters}`: the APIGen-MT-5k `tools` column entry."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class ToolCall(BaseModel):
    """One call of a tool. Accepts tau-bench's `{name, kwargs}` as well as `{name, arguments}`."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("arguments", "kwargs"))

    def as_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments})


class OpenAIToolCall(BaseModel):
    """A tool call as it sits in an OpenAI assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: dict[str, Any]  # {"name": str, "arguments": JSON string}

    @classmethod
    def of(cls, call: ToolCall, call_id: str) -> OpenAIToolCall:
        return cls(id=call_id, function={"name": call.name, "arguments": json.dumps(call.arguments)})

    def call(self) -> ToolCall:
        """The decoded call; undecodable argument text becomes `{}` with the raw text kept under `__raw__`."""
        raw = self.function.get("arguments", "{}")
        if isinstance(raw, dict):
            return ToolCall(name=self.function.get("name", ""), arguments=raw)
        try:
            arguments = json.loads(raw) if raw else {}
        except (TypeError, ValueError, RecursionError):  # RecursionError: nesting deeper than any real argument
            arguments = {"__raw__": raw}
        if not isinstance(arguments, dict):
            arguments = {"__raw__": raw}
        return ToolCall(name=self.function.get("name", ""), arguments=arguments)


class Message(BaseModel):
    """An OpenAI chat message (system, user, assistant with optional tool calls, tool)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None  # the model's thinking, kept apart from what the other side sees

    def openai(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Provenance(BaseModel):
    """Where a blueprint came from: sampled context, seed, reflection round, recombination parents."""

    context_ids: list[str] = Field(default_factory=list)
    seed: int | None = None
    round: int = 0
    parents: list[str] = Field(default_factory=list)


class Scenario(BaseModel):
    """What the simulated human of a tau2-bench task is told, part by part (tau2's `user_scenario.instructions`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    reason_for_call: str | None = None
    known_info: str | None = None
    unknown_info: str | None = None
    task_instructions: str | None = None

    def text(self) -> str:
        """Every part with its heading, as one text: a tau2 blueprint's `instruction`, which dedup, the judge and the
        check of revealed values read."""
        return "\n\n".join(f"{heading}: {value.strip()}" for heading, value in self.parts())

    def parts(self) -> list[tuple[str, str]]:
        """(heading, text) of each part the scenario has, in tau2's order."""
        named = (
            ("Reason for call", self.reason_for_call),
            ("Known info", self.known_info),
            ("Unknown info", self.unknown_info),
            ("Task instructions", self.task_instructions),
        )
        return [(heading, value) for heading, value in named if value and value.strip()]


class Blueprint(BaseModel):
    """A task: instruction q, ground-truth actions a_gt, expected outputs o_gt. Reads tau-bench task JSON as is.
    A tau2-bench task keeps its user scenario in `scenario` (the human is given it part by part) and its text,
    joined, in `instruction`."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    domain: str | None = None
    user_id: str | None = None
    instruction: str
    actions: list[ToolCall]
    outputs: list[str] = Field(default_factory=list)
    provenance: Provenance = Field(default_factory=Provenance)
    scenario: Scenario | None = None


class Verdict(BaseModel):
    """The outcome of one validation stage on one item."""

    stage: str
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
