"""What the Phase-1 roles are told: the proposer, the review committee and the feedback summariser.

Each role gets a fixed system prompt (shared by every request, so an engine's prefix cache keeps it) and
one user message with what varies: the sampled context, the task under review, the failure to explain.
Tasks are shown as the JSON the proposer writes, `{instruction, actions, outputs}`.
"""

from __future__ import annotations

import json
from typing import Any

from apigen_mt.blueprints.samplers import SampledContext
from apigen_mt.simulators.types import Blueprint, Message, Verdict

# --- proposer ----------------------------------------------------------------------------------------

_PROPOSER_PROMPT = """\
You design tasks for training and testing customer-service agents. A task has three parts:

- "instruction": what a simulated customer is told before chatting with the agent. Address the \
customer as "you": who they are (name, and the email or zip code they can give to be identified) \
and what they want. Give every detail the agent will need from them: order or reservation numbers, \
the items and the options they want, addresses, the payment method to use, the reason for a \
cancellation, and what they answer when the agent offers a choice. Leave out what the agent looks \
up itself: internal ids of products or variants, prices, balances, statuses. Describe wanted items \
by their options instead of their ids.
- "actions": the tool calls a correct agent makes for this customer, in order, each as \
{"name": <tool>, "arguments": {...}} with every required argument, taking values only from the \
records you are given. Every task has at least one call. The calls that change the database are \
what matter; add the look-ups a careful agent makes on the way where they help, and those that give \
every fact in "outputs". A question the customer asks is not a tool call: its answer goes into \
"outputs".
- "outputs": the facts the agent must tell the customer because the customer asks for them (a \
price, a total, a status, a count), each a short string written exactly as the records or tool \
results give it. Leave the list empty when the customer asks for nothing.

Every call must be allowed by the policy for this customer and these records, and the instruction \
must give the agent every fact the policy asks for before the call (for example the reason a rule \
requires). Use only the tools listed. Make the task something a real customer would plausibly want, \
not a trivial one.
"""

_STRUCTURED_FORMAT = """\
Answer with one JSON object {"thought": str, "instruction": str, "actions": [...], "outputs": [str]}. \
Keep "thought" to a few sentences: which records and tools the task uses and why the policy allows it."""

_TAGGED_FORMAT = """\
First think briefly, in a few sentences, inside <thought></thought>: which records and tools the task \
uses and why the policy allows it. Then give the task as one JSON object inside <answer></answer>:
<answer>{"instruction": "...", "actions": [{"name": "...", "arguments": {...}}], "outputs": []}</answer>"""

_REFUSAL_PART = """\
# This task is a refusal
The customer asks for something the policy forbids for them, judging by the records: for example an \
action on an order or reservation whose status or details rule it out, or a change the policy does \
not allow. A correct agent explains why it cannot help with that and changes nothing. So "actions" \
holds the look-ups that show why (the customer's identity, the record the request concerns) and no \
call that changes the database, and the instruction says what the customer asks for and that they \
accept the refusal or give up after insisting once. Pick a request that the policy clearly forbids, \
not one it merely discourages."""


def proposer_system_prompt(*, structured: bool) -> str:
    return f"{_PROPOSER_PROMPT}\n{_STRUCTURED_FORMAT if structured else _TAGGED_FORMAT}"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# A reviewer's prompt must leave room for its reply: the records shown are cut beyond this many characters.
RECORDS_MAX_CHARS = 6000


def touched_records(db: Any, blueprint: Blueprint) -> dict[str, Any]:
    """`"table/id" -> record` for every argument value of the task's calls that names a record of a table of `db`
    (an order id, a user id, a reservation id), in call order: what a reviewer needs to judge the calls with."""
    found: dict[str, Any] = {}
    tables = {name: table for name, table in (db or {}).items() if isinstance(table, dict)}
    for call in blueprint.actions:
        for value in call.arguments.values():
            if not isinstance(value, str):
                continue
            for name, table in tables.items():
                if value in table:
                    found.setdefault(f"{name}/{value}", table[value])
    return found


def records_text(records: dict[str, Any]) -> str:
    """One compact JSON line per record, cut at `RECORDS_MAX_CHARS` with a note saying how many were left out."""
    lines: list[str] = []
    used = 0
    for key, record in records.items():
        line = f"{key}: {_compact(record)}"
        if used + len(line) > RECORDS_MAX_CHARS:
            lines.append(f"({len(records) - len(lines)} more record(s) left out for length)")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def task_json(blueprint: Blueprint) -> str:
    """A blueprint as the proposer writes it, `{instruction, actions, outputs}`, one action a line."""
    calls = ",\n".join(
        f"    {_compact({'name': call.name, 'arguments': call.arguments})}" for call in blueprint.actions
    )
    actions = f"[\n{calls}\n  ]" if calls else "[]"
    return (
        f'{{\n  "instruction": {_compact(blueprint.instruction)},\n  "actions": {actions},\n'
        f'  "outputs": {_compact(blueprint.outputs)}\n}}'
    )


def proposer_user_message(
    context: SampledContext, *, refusal: bool, feedback: str | None, previous: Blueprint | None
) -> str:
    """The sampled context, then the refusal brief and the revision material when they apply."""
    parts = [f"# Policy\n{context.policy_excerpt.strip()}"] if context.policy_excerpt.strip() else []
    if context.rules:
        parts.append("# Rules to keep in mind\n" + "\n".join(f"- {rule}" for rule in context.rules))
    customer = f"# The customer\nuser id: {context.user_id}"
    if context.persona and context.persona.strip():
        customer += f"\npersona: {context.persona.strip()}"
    parts.append(customer)
    records = [
        f"{table} {key}: {_compact(record)}" for table, rows in context.records.items() for key, record in rows.items()
    ]
    if records:
        parts.append("# Their records\n" + "\n".join(records))
    parts.append("# Tools\n" + "\n".join(_compact(tool.plain()) for tool in context.tools))
    if context.walk:
        lead = "The forbidden request involves these tools" if refusal else "Build the task around these tools"
        parts.append(f"# Suggested flow\n{lead}, in this order: " + " -> ".join(context.walk))
    for number, example in enumerate(context.examples, start=1):
        parts.append(f"# Example task {number}\n{task_json(example)}")
    if refusal:
        parts.append(_REFUSAL_PART)
    if previous is not None:
        parts.append(f"# Your previous attempt\n{task_json(previous)}")
    if feedback is not None:
        heading = "# What to improve" if previous is not None else "# Your previous attempt could not be used"
        parts.append(f"{heading}\n{feedback.strip()}\n\nWrite the task again, following this plan.")
    else:
        parts.append("Write one new task for this customer.")
    return "\n\n".join(parts)


# --- review committee --------------------------------------------------------------------------------

_REVIEW_PROMPT = """\
You review tasks written for training customer-service agents. A task has an instruction for a \
simulated customer, the tool calls a correct agent makes (its ground truth), the outputs the agent \
must tell the customer, and the diff_patch: every change those calls make to the database. Judge it \
against the policy and the records the calls touch (as they were before the task), and score each \
criterion 1 (met) or 0 (not met):

- correctness: the calls, as the diff_patch shows them, do what the instruction asks: no change the \
customer did not ask for, none that is missing, the right records, items, options and payment.
- completeness: the instruction gives the customer every detail the calls need (identity, order or \
reservation numbers, wanted items and options, addresses, payment method, decisions), and every fact \
the policy asks for before a call. Watch for what no automatic check sees: when the policy allows an \
action only for certain reasons or under certain conditions, the instruction must state them.
- satisfaction: the outputs answer every question the instruction asks, with values the agent can \
learn from its tools; an empty list is right when the customer asks nothing.
- creativity: a real customer could plausibly want this, and it is not trivial.

First write a short reflection, a few sentences naming each problem you found, then the scores. \
Answer with one JSON object {"reflection": str, "correctness": 0 or 1, "completeness": 0 or 1, \
"satisfaction": 0 or 1, "creativity": 0 or 1}."""

_REVIEW_REFUSAL = """\
# This task is a refusal
The customer asks for something the policy forbids, so a correct agent declines and changes nothing: \
the calls make no change and the diff_patch is empty. Score correctness by whether the policy really \
forbids the request for this customer, and completeness by whether the instruction makes the request \
clear enough for the agent to see that."""


def review_messages(
    blueprint: Blueprint, diff_patch: Any, policy_excerpt: str, *, refusal: bool, records: dict[str, Any] | None = None
) -> list[Message]:
    """`records`: the records the task's calls touch, as `touched_records` gives them."""
    changes = "\n".join(_compact(op) for op in diff_patch) if diff_patch else "(empty: the database is unchanged)"
    parts = [
        f"# Policy\n{policy_excerpt.strip()}",
        f"# The task\n{task_json(blueprint)}",
        f"# diff_patch\n{changes}",
    ]
    if records:
        parts.append(f"# Records the calls touch, before the task\n{records_text(records)}")
    if refusal:
        parts.append(_REVIEW_REFUSAL)
    return [Message(role="system", content=_REVIEW_PROMPT), Message(role="user", content="\n\n".join(parts))]


# --- feedback summariser -----------------------------------------------------------------------------

_FEEDBACK_PROMPT = """\
A task written for training customer-service agents was rejected. You get the task, the check that \
rejected it, and that check's reasons (for a review: each reviewer's votes and reflection). Write a \
short improvement plan for the task's author: a few numbered steps, each naming what exactly is wrong \
(which call, argument, instruction detail or output) and what to change. Where reviewers disagree, \
keep the points most of them share. Do not write the revised task yourself. Put the plan inside \
<plan></plan>."""


def feedback_messages(blueprint: Blueprint, failed: Verdict) -> list[Message]:
    reasons = "\n".join(f"- {reason}" for reason in failed.reasons) or "- (no reason given)"
    body = f"# Rejected by: the {failed.stage} check\n\n# Reasons\n{reasons}\n\n# The task\n{task_json(blueprint)}"
    return [Message(role="system", content=_FEEDBACK_PROMPT), Message(role="user", content=body)]
