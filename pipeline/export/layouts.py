"""The dataset layouts of formats.md section 1, made from stored trial rows; which trials go in which split.

ShareGPT is APIGen-MT-5k's layout (`conversations` of {from, value}, `system`, `tools`); each
`function_call` value is the JSON text {"name", "arguments": {...}}, the arguments an object inside it.
The OpenAI layout's `messages` (and the preference pairs' `prompt`, `chosen`, `rejected`) is a list of
Arrow `json` values, one JSON object per message: the `datasets` library reads that type as its `Json`
feature and decodes each message to a Python dict, from `load_from_disk` and from
`load_dataset("parquet")` alike (Parquet keeps it as a string column with the JSON logical type). Not a
list of structs, for two reasons: an Arrow struct gives every message every key (a user message
`tool_calls: None`, which templates that test `is defined` then iterate), and a struct needs one type for
every call's `arguments`, which differ per tool, so it could only hold them as strings, which templates
write with `tojson` as quoted, escaped strings. Here a message
has only the keys it needs and `arguments` loads as a mapping, ready for
`tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]))`. `tools` stays a JSON
string, since each tool's parameter schema differs. Both layouts carry the same provenance columns, and
the rejected split the same columns as the train split, so train and rejected are splits of one config.

Some trials go in no split. A system failure (status `failed`: the engine or endpoint was down, or
answered garbage) says nothing about the agent or the simulated human, and a rerun of the run plays it
again. A trial with no conversation (no user message: the simulated human failed before saying anything)
teaches nothing, and APIGen-MT-5k's conversations start with the human. A row of a status the pipeline
does not write (a shard edited by hand) cannot be placed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from apigen_mt.pipeline.store.schemas import STATUSES
from apigen_mt.simulators.trace import content_text, tool_calls_of
from apigen_mt.simulators.types import ToolCall

MESSAGES = pa.list_(pa.json_())  # one JSON object per message (the `datasets` Json feature)
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
        [pa.field("messages", MESSAGES), pa.field("tools", pa.string()), *_PROVENANCE]  # tools: OpenAI JSON
    ),
}
PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("prompt", MESSAGES),  # system prompt and first user turn
        pa.field("chosen", MESSAGES),  # a verified continuation
        pa.field("rejected", MESSAGES),  # a continuation the agent got wrong
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


@dataclass(frozen=True)
class SetAside:
    """How many trials went in no split, and how they ended (`termination`) or what status they had, most
    frequent first."""

    no_conversation: dict[str, int]  # termination -> trials
    system_failures: dict[str, int]  # termination -> trials
    unknown_status: dict[str, int]  # status -> rows


@dataclass(frozen=True)
class Selection:
    """Which trials go in which split, and which in none: `system_failures` (status `failed`), `left_out` (no
    conversation) and `unknown_status` (a status the pipeline does not write)."""

    train: list[Row]
    rejected: list[Row]
    pairs: list[Pair]
    left_out: list[Row]
    system_failures: list[Row]
    unknown_status: list[Row]

    def set_aside(self) -> SetAside:
        return SetAside(
            no_conversation=_tally(self.left_out, "termination"),
            system_failures=_tally(self.system_failures, "termination"),
            unknown_status=_tally(self.unknown_status, "status"),
        )


def _tally(rows: Sequence[Row], column: str) -> dict[str, int]:
    return dict(Counter(str(row[column]) for row in rows).most_common())


def select_rows(rows: Sequence[Row]) -> Selection:
    """The splits of one row per trial, in (blueprint_id, trial) order.

    In no split: the trials of a status the pipeline does not write, the system's failures (status `failed`,
    whatever their conversation) and the trials without a user message. train: the first accepted trial of
    each (blueprint, signature). rejected: the other rejected trials. Pairs: per blueprint, each trial
    rejected because of the agent (not the simulated human) against a train trajectory of that blueprint, in
    turn, since only those say what the agent should not have done.
    """
    train: list[Row] = []
    rejected: list[Row] = []
    left_out: list[Row] = []
    system_failures: list[Row] = []
    unknown_status: list[Row] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if row["status"] not in STATUSES:
            unknown_status.append(row)
        elif row["status"] == "failed":
            system_failures.append(row)
        elif not any(message.get("role") == "user" for message in _messages(row)):
            left_out.append(row)
        elif row["status"] == "accepted":
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
        if row["attribution"] == "agent" and candidates:
            pairs.append((candidates[used[row["blueprint_id"]] % len(candidates)], row))
            used[row["blueprint_id"]] += 1
    return Selection(train, rejected, pairs, left_out, system_failures, unknown_status)


def _messages(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        messages = json.loads(row["messages"])
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"trajectory {_row_id(row)}: its messages are not JSON ({exc.msg}); its shard is damaged"
        ) from None
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


def openai_messages(messages: Sequence[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    """Stored messages as training messages: each with only the keys it has, call arguments as mappings.

    system, user and plain assistant messages: `role`, `content` (a string). An assistant message with
    calls: `tool_calls` [{id, type, function: {name, arguments}}] and `content` only when it has text. A
    tool message: `tool_call_id` and `name` (the tool it answers; from the call with its id when the
    stored message lacks it), `content`. Any message keeps a non-empty `reasoning_content`.
    """
    names: dict[str, str] = {}  # call id -> tool name
    converted = []
    for position, message in enumerate(messages):
        role = message.get("role")
        text = content_text(message)
        out: dict[str, Any] = {"role": role}
        if role == "assistant" and message.get("tool_calls"):
            if text:
                out["content"] = text
            out["tool_calls"] = []
            for call_id, call in _calls(message):
                names[call_id] = call.name
                function = {"name": call.name, "arguments": call.arguments}
                out["tool_calls"].append({"id": call_id, "type": "function", "function": function})
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = message.get("name") or names.get(str(call_id or ""))
            if not name:
                raise ExportError(
                    f"trajectory {where}: tool message {position} names no tool and answers no earlier call"
                )
            out |= ({} if call_id is None else {"tool_call_id": call_id}) | {"name": name, "content": text}
        else:
            out["content"] = text
        if message.get("reasoning_content"):
            out["reasoning_content"] = str(message["reasoning_content"])
        converted.append(out)
    return converted


def _calls(message: Mapping[str, Any]) -> list[tuple[str, ToolCall]]:
    """(call id, decoded call) of each call in an assistant message."""
    entries = message.get("tool_calls") or []
    ids = [str(entry.get("id") or "") if isinstance(entry, dict) else "" for entry in entries]
    return list(zip(ids, tool_calls_of(message), strict=True))


def sharegpt_conversation(messages: list[dict[str, Any]], where: str) -> tuple[str, list[dict[str, str]]]:
    """(system prompt, conversation) in the APIGen-MT-5k layout: each call followed by its observation.

    Thinking (`reasoning_content`) has no place in that layout and is left out."""
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
            calls = _calls(message)
            text = content_text(message)
            if text or not calls:
                turns.append({"from": "gpt", "value": text})
            # The tool messages answering this turn follow it; match them by id, else by position.
            results = []
            while position < len(rest) and rest[position].get("role") == "tool":
                results.append(rest[position])
                position += 1
            by_id = {result.get("tool_call_id"): result for result in results}
            for index, (call_id, call) in enumerate(calls):
                result = by_id.get(call_id) or (results[index] if index < len(results) else None)
                if result is None and position == len(rest):
                    break  # an episode cut off (model error) after the call, before its result: nothing to pair it with
                if result is None:
                    raise ExportError(f"trajectory {where}: tool call {call.name!r} has no tool message")
                # The call is one JSON text; its arguments an object inside it, never a string of their own.
                turns.append({"from": "function_call", "value": call.as_json()})
                turns.append({"from": "observation", "value": content_text(result)})
        elif role == "tool":
            raise ExportError(f"trajectory {where}: a tool message follows no tool call")
    return system, turns


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
            records.append(
                {"messages": openai_messages(messages, _row_id(row)), "tools": row["tools"], **_provenance(row)}
            )
    return message_table(records, SCHEMAS[format_])


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
        # Converted whole before the split, so that a tool message after the prompt finds its call's name.
        prompt, chosen_rest = _split_prompt(openai_messages(_messages(chosen), _row_id(chosen)))
        _, rejected_rest = _split_prompt(openai_messages(_messages(rejected), _row_id(rejected)))
        records.append(
            {
                "prompt": prompt,
                "chosen": chosen_rest,
                "rejected": rejected_rest,
                "tools": chosen["tools"],
                "domain": chosen["domain"],
                "blueprint_id": chosen["blueprint_id"],
                "chosen_id": _row_id(chosen),
                "rejected_id": _row_id(rejected),
            }
        )
    return message_table(records, PREFERENCE_SCHEMA)


def message_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The records as `schema`; message lists go in as JSON texts (pyarrow builds no `json` values from objects)."""
    columns = [field.name for field in schema if field.type == MESSAGES]
    storage = pa.schema(
        [field.with_type(pa.list_(pa.string())) if field.name in columns else field for field in schema]
    )
    for record in records:
        for column in columns:
            record[column] = [json.dumps(message, ensure_ascii=False) for message in record[column]]
    return pa.Table.from_pylist(records, schema=storage).cast(schema)
