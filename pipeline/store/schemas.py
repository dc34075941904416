"""The storage contract of a run folder's shards: their schemas, the values the readers know, and the checks that
hold every row to them, one row as it is written (`RowCheck`) and a whole shard as it is read
(`contract_problem`). `pipeline.store.shards` writes and reads the shards; docs/formats.md describes each column."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from apigen_mt.pipeline.store.proposal_rows import STAGE_ORDER

STATUSES = ("accepted", "rejected", "failed")
ATTRIBUTIONS = ("agent", "human", "system")  # whose fault a trial that is not accepted is

TRAJECTORY_SCHEMA = pa.schema(
    [
        pa.field("blueprint_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("trial", pa.int64(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),  # 1 + replays after engine failures
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected | failed
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("attribution", pa.string()),  # null when accepted, else agent | human | system
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("state_match", pa.bool_(), nullable=False),
        pa.field("outputs_match", pa.bool_(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("policy_violations", pa.list_(pa.string()), nullable=False),
        pa.field("human_errors", pa.list_(pa.string()), nullable=False),
        pa.field("termination", pa.string(), nullable=False),
        pa.field("messages", pa.string(), nullable=False),  # JSON: OpenAI messages, system prompt first
        pa.field("tools", pa.string(), nullable=False),  # JSON: OpenAI tools list
        pa.field("blueprint", pa.string(), nullable=False),  # JSON
        pa.field("signature", pa.string(), nullable=False),  # validators.sampling.trajectory_signature
        pa.field("turns", pa.int64(), nullable=False),  # agent turns
        pa.field("tool_calls", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),  # the agent's, summed over the episode
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("human_prompt_tokens", pa.int64(), nullable=False),
        pa.field("human_completion_tokens", pa.int64(), nullable=False),
        pa.field("agent_model", pa.string(), nullable=False),
        pa.field("human_model", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("turn_stats", pa.string(), nullable=False),  # JSON list per turn: role, tokens, latency_s
        pa.field("finished_at", pa.string(), nullable=False),  # ISO time
        # Endpoint fallbacks its models had in force when it finished
        # (pipeline.engines.endpoint_features.describe_fallback)
        pa.field("fallbacks", pa.list_(pa.string())),
        # What the episode changed in the agent's turns before storing them (simulators.agent.repair_turn):
        # calls after the first dropped, text beside a call removed; each names its turn.
        pa.field("repairs", pa.list_(pa.string())),
        # The verifier's warnings: violations only refused calls caused, problems of the blueprint itself.
        pa.field("warnings", pa.list_(pa.string())),
    ]
)

# Phase 1: a proposal's rounds share its blueprint_id; `final` marks its last round, which resume looks for.
BLUEPRINT_SCHEMA = pa.schema(
    [
        pa.field("blueprint_id", pa.string(), nullable=False),  # DOMAIN-pNNNN: the domain and the proposal index
        pa.field("domain", pa.string(), nullable=False),
        pa.field("proposal", pa.int64(), nullable=False),
        pa.field("round", pa.int64(), nullable=False),  # 0: the proposal, 1..: revisions after feedback
        pa.field("final", pa.bool_(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),  # 1 + reruns of the proposal after engine failures
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected | failed
        # format | execution | policy | review | dedup | decontamination; null when accepted or the backend failed
        pa.field("failed_stage", pa.string()),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("parents", pa.list_(pa.string()), nullable=False),  # blueprint ids a recombined task joins
        # JSON texts; the JSON `null` where there is nothing: no task could be read, the actions were not run,
        # the committee did not vote.
        pa.field("blueprint", pa.string(), nullable=False),  # in `validate`'s input form, id = blueprint_id
        pa.field("diff_patch", pa.string(), nullable=False),
        pa.field("votes", pa.string(), nullable=False),  # ballots, decision, score, threshold
        pa.field("refusal", pa.bool_(), nullable=False),
        pa.field("feedback", pa.string()),  # the improvement plan this round answered; null in round 0
        pa.field("text", pa.string(), nullable=False),  # the proposer's raw reply
        pa.field("user_id", pa.string()),  # the sampled user; null when no context could be sampled
        pa.field("context_ids", pa.list_(pa.string()), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),  # the proposer's and the committee's
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("proposer_model", pa.string(), nullable=False),
        pa.field("finished_at", pa.string(), nullable=False),  # ISO time
        pa.field("fallbacks", pa.list_(pa.string())),  # as for trajectories, of the proposer's and reviewers' models
    ]
)
LATER_COLUMNS = frozenset(
    {"fallbacks", "repairs", "warnings"}
)  # nullable, added later: a shard or row without one has it null
# The values the readers know, of the columns that hold one of a few (None: the column's null).
KNOWN_VALUES: dict[str, frozenset[str | None]] = {
    "status": frozenset(STATUSES),
    "attribution": frozenset({None, *ATTRIBUTIONS}),
    "failed_stage": frozenset({None, *STAGE_ORDER}),
}


def _is_text(value: Any) -> bool:
    # Arrow strings are UTF-8: a lone surrogate (json.loads lets one through) cannot be stored.
    try:
        return type(value) is str and (value.isascii() or bool(value.encode()))
    except UnicodeEncodeError:
        return False


# Quick tests for the plain Python values a column type certainly takes; a type not here is always converted.
_QUICK: dict[pa.DataType, Callable[[Any], bool]] = {
    pa.string(): _is_text,
    pa.int64(): lambda value: type(value) is int and -(2**63) <= value < 2**63,
    pa.float64(): lambda value: type(value) is float,
    pa.bool_(): lambda value: type(value) is bool,
    pa.list_(pa.string()): lambda value: type(value) is list and all(map(_is_text, value)),
}


class RowCheck:
    """Raises ValueError for a row that does not fit the schema.

    Converting a row to Arrow costs a few hundred microseconds, too much for every row of a large run: a
    row of plain values passes quick type tests, and only one they are unsure of is converted (which
    accepts exactly what Arrow accepts and says what is wrong).
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.names = set(schema.names)
        self.columns = [(field.name, field.nullable, _QUICK.get(field.type, lambda value: False)) for field in schema]
        self.known = [(name, values) for name, values in KNOWN_VALUES.items() if name in self.names]

    def __call__(self, row: Mapping[str, Any]) -> None:
        if row.keys() != self.names or not all(
            check(value) if (value := row[name]) is not None else nullable for name, nullable, check in self.columns
        ):
            _convert_row(row, self.schema)
        for name, values in self.known:
            if row[name] not in values:
                raise ValueError(
                    f"{_row_name(row, self.schema)}: column {name!r} is {row[name]!r}, not one of {_listed(values)}"
                )


def _row_name(row: Mapping[str, Any], schema: pa.Schema) -> str:
    item = f"round {row.get('round')!r}" if "round" in schema.names else f"trial {row.get('trial')!r}"
    return f"row for blueprint {row.get('blueprint_id')!r} {item}"


def _convert_row(row: Mapping[str, Any], schema: pa.Schema) -> None:
    where = _row_name(row, schema)
    missing = [name for name in schema.names if name not in row]
    unknown = sorted(set(row) - set(schema.names))
    if missing or unknown:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise ValueError(f"{where} does not match the shard schema: {'; '.join(problems)}")
    for field in schema:
        try:
            column = pa.array([row[field.name]], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{where}: column {field.name!r} must be {field.type}: {exc}") from None
        if not field.nullable and column.null_count:
            raise ValueError(f"{where}: column {field.name!r} is null; it must be {field.type}")


def contract_problem(table: pa.Table, schema: pa.Schema) -> str | None:
    """What the first row that does not fit the schema gets wrong beyond its types (a null where the schema has
    none, a value the readers do not know), or None."""
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            return f"row {_first_index(pc.is_null(column))} has a null {field.name!r}"
        known = KNOWN_VALUES.get(field.name)
        if known is not None:
            unknown = pc.invert(pc.is_in(column, value_set=pa.array(list(known), field.type), skip_nulls=False))
            if pc.any(unknown).as_py():
                value = column[_first_index(unknown)].as_py()
                return f"row {_first_index(unknown)} has {field.name} {value!r}, not one of {_listed(known)}"
    return None


def _first_index(mask: pa.ChunkedArray) -> int:
    return pc.index(mask, True).as_py()


def _listed(values: frozenset[str | None]) -> str:
    return ", ".join(sorted(str(value) if value is not None else "null" for value in values))
