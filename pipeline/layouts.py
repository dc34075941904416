"""The dataset layouts of formats.md section 1, made from stored trial rows; which trials go in which split.

ShareGPT is APIGen-MT-5k's layout (`conversations` of {from, value}, `system`, `tools`); OpenAI keeps
`messages` as a native list of structs, every message with every key (null where absent) so that Arrow
has one struct type. Both carry the same provenance columns, and the rejected split the same columns as
the train split, so train and rejected are splits of one config. Preference pairs are OpenAI messages.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from apigen_mt.simulators.trace import content_text

_FUNCTION = pa.struct([("name", pa.string()), ("arguments", pa.string())])  # arguments: a JSON string, as in the API
_TOOL_CALL = pa.struct([("id", pa.string()), ("type", pa.string()), ("function", _FUNCTION)])
MESSAGE = pa.struct(
    [("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(_TOOL_CALL)), ("tool_call_id", pa.string())]
)
_PROVENANCE = [
    pa.field("id", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("blueprint_id", pa.string()),
    pa.field("trial", pa.int64()),
    pa.field("instruction", pa.string()),
    pa.field("actions", pa.string()),  # JSON
    pa.field("outputs", pa.string()),  # JSON
    pa.field("reward", pa.float64()),
    pa.field("agent_model", pa.string()),
    pa.field("human_model", pa.string()),
    pa.field("status", pa.string()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("attribution", pa.string()),
    pa.field("termination", pa.string()),
]
SCHEMAS = {
    "sharegpt": pa.schema(
        [
            pa.field("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
            pa.field("system", pa.string()),
            pa.field("tools", pa.string()),  # JSON: [{name, description, parameters}]
            *_PROVENANCE,
        ]
    ),
    "openai": pa.schema(
        [pa.field("messages", pa.list_(MESSAGE)), pa.field("tools", pa.string()), *_PROVENANCE]  # tools: OpenAI JSON
    ),
}
PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("prompt", pa.list_(MESSAGE)),  # system prompt and first user turn
        pa.field("chosen", pa.list_(MESSAGE)),  # a verified continuation
        pa.field("rejected", pa.list_(MESSAGE)),  # a continuation the agent got wrong
        pa.field("tools", pa.string()),  # JSON: OpenAI tools
        pa.field("domain", pa.string()),
        pa.field("blueprint_id", pa.string()),
        pa.field("chosen_id", pa.string()),
        pa.field("rejected_id", pa.string()),
    ]
)

Row = Mapping[str, Any]  # one trial as stored (TRAJECTORY_SCHEMA)
Pair = tuple[Row, Row]  # (chosen, rejected)


class ExportError(ValueError):
    """A run folder cannot be exported or pushed as asked; the message says what to do."""


def select_rows(rows: Sequence[Row]) -> tuple[list[Row], list[Row], list[Pair]]:
    """(train, rejected, preference pairs) from one row per trial, in (blueprint_id, trial) order.

    train: the first accepted trial of each (blueprint, signature). Pairs: per blueprint, each trial
    rejected because of the agent (not the simulated human, not the engine) against a train trajectory
    of that blueprint, in turn, since only those say what the agent should not have done.
    """
    train: list[Row] = []
    rejected: list[Row] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if row["status"] == "accepted":
            if (row["blueprint_id"], row["signature"]) not in seen:
                seen.add((row["blueprint_id"], row["signature"]))
                train.append(row)
        else:
            rejected.append(row)
    chosen_by_blueprint: dict[str, list[Row]] = defaultdict(list)
    for row in train:
        chosen_by_blueprint[row["blueprint_id"]].append(row)
    pairs: list[Pair] = []
    used: dict[str, int] = defaultdict(int)
    for row in rejected:
        candidates = chosen_by_blueprint.get(row["blueprint_id"])
        if row["status"] == "rejected" and row["attribution"] == "agent" and candidates and _split_prompt(_messages(row))[0]:
            pairs.append((candidates[used[row["blueprint_id"]] % len(candidates)], row))
            used[row["blueprint_id"]] += 1
    return train, rejected, pairs


def _messages(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        messages = json.loads(row["messages"])
    except json.JSONDecodeError as exc:
        raise ExportError(f"trajectory {_row_id(row)}: its messages are not JSON ({exc.msg}); its shard is damaged") from None
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        raise ExportError(f"trajectory {_row_id(row)}: its messages are not a list of message objects")
    return messages


def _row_id(row: Mapping[str, Any]) -> str:
    return f"{row['blueprint_id']}-trial{row['trial']}"


def _split_prompt(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages up to and including the first user turn, the rest); ([], messages) without a user turn."""
    for position, message in enumerate(messages):
        if message.get("role") == "user":
            return messages[: position + 1], messages[position + 1 :]
    return [], messages


def openai_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI message with every key of MESSAGE (null where absent) and arguments as JSON strings."""
    content = message.get("content")
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments", "{}")
        calls.append(
            {
                "id": str(call.get("id") or ""),
                "type": "function",
                "function": {
                    "name": str(function.get("name", "")),
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return {
        "role": message["role"],
        "content": None if content is None else content_text(message),
        "tool_calls": calls or None,
        "tool_call_id": message.get("tool_call_id"),
    }


def sharegpt_conversation(messages: list[dict[str, Any]], where: str) -> tuple[str, list[dict[str, str]]]:
    """(system prompt, conversation) in the APIGen-MT-5k layout: each call followed by its observation."""
    system = content_text(messages[0]) if messages and messages[0].get("role") == "system" else ""
    rest = messages[1:] if messages and messages[0].get("role") == "system" else messages
    turns: list[dict[str, str]] = []
    position = 0
    while position < len(rest):
        message = rest[position]
        position += 1
        role = message.get("role")
        if role == "user":
            turns.append({"from": "human", "value": content_text(message)})
        elif role == "assistant":
            calls = openai_message(message)["tool_calls"] or []
            text = content_text(message)
            if text or not calls:
                turns.append({"from": "gpt", "value": text})
            # The tool messages answering this turn follow it; match them by id, else by position.
            results = []
            while position < len(rest) and rest[position].get("role") == "tool":
                results.append(rest[position])
                position += 1
            by_id = {result.get("tool_call_id"): result for result in results}
            for index, call in enumerate(calls):
                result = by_id.get(call["id"]) or (results[index] if index < len(results) else None)
                if result is None and position == len(rest):
                    break  # an episode cut off (model error) after the call, before its result: nothing to pair it with
                if result is None:
                    raise ExportError(f"trajectory {where}: tool call {call['function']['name']!r} has no tool message")
                name, arguments = call["function"]["name"], _decoded_arguments(call["function"]["arguments"])
                turns.append({"from": "function_call", "value": json.dumps({"name": name, "arguments": arguments})})
                turns.append({"from": "observation", "value": content_text(result)})
        elif role == "tool":
            raise ExportError(f"trajectory {where}: a tool message follows no tool call")
    return system, turns


def _decoded_arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"__raw__": text}  # as simulators.types keeps undecodable arguments


def _provenance(row: Mapping[str, Any]) -> dict[str, Any]:
    blueprint = json.loads(row["blueprint"])
    return {
        "id": _row_id(row),
        "domain": row["domain"],
        "blueprint_id": row["blueprint_id"],
        "trial": row["trial"],
        "instruction": blueprint.get("instruction", ""),
        "actions": json.dumps(blueprint.get("actions", [])),
        "outputs": json.dumps(blueprint.get("outputs", [])),
        "reward": row["reward"],
        "agent_model": row["agent_model"],
        "human_model": row["human_model"],
        "status": row["status"],
        "reasons": list(row["reasons"]),
        "attribution": row["attribution"],
        "termination": row["termination"],
    }


def layout_table(format_: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows of trials in one layout of formats.md section 1."""
    records = []
    for row in rows:
        messages = _messages(row)
        if format_ == "sharegpt":
            system, conversations = sharegpt_conversation(messages, _row_id(row))
            tools = [_plain_tool(entry.get("function", entry)) for entry in json.loads(row["tools"])]
            layout = {"conversations": conversations, "system": system, "tools": json.dumps(tools)}
            records.append(layout | _provenance(row))
        else:
            records.append({"messages": [openai_message(m) for m in messages], "tools": row["tools"], **_provenance(row)})
    return pa.Table.from_pylist(records, schema=SCHEMAS[format_])


def _plain_tool(function: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI tool's function as the APIGen-MT-5k `tools` entry."""
    return {
        "name": function.get("name"),
        "description": function.get("description", ""),
        "parameters": function.get("parameters", {}),
    }


def preference_table(pairs: Sequence[Pair]) -> pa.Table:
    records = []
    for chosen, rejected in pairs:
        prompt, chosen_rest = _split_prompt(_messages(chosen))
        _, rejected_rest = _split_prompt(_messages(rejected))
        records.append(
            {
                "prompt": [openai_message(m) for m in prompt],
                "chosen": [openai_message(m) for m in chosen_rest],
                "rejected": [openai_message(m) for m in rejected_rest],
                "tools": chosen["tools"],
                "domain": chosen["domain"],
                "blueprint_id": chosen["blueprint_id"],
                "chosen_id": _row_id(chosen),
                "rejected_id": _row_id(rejected),
            }
        )
    return pa.Table.from_pylist(records, schema=PREFERENCE_SCHEMA)
