"""Real conversations: tau-bench's tasks played the way gpt-4o plays them, scored by the real `apigen-mt verify`.

tau-bench publishes gpt-4o's conversations on its airline test tasks. Of those it rewarded on tasks whose ground
truth is sound, `verify` used to keep 47 of 72: 21 were lost only because an assistant message carried text
beside its tool call, 4 because a call the environment refused (an error observation, no state change) broke a
rule; it rightly rejected all 12 on the tasks whose ground truth breaks the policy. That file is not available
here, so these tests build conversations with the same traits on tau-bench's airline sample and retail dev
tasks (`../shared/taubench`): the agent asks who the user is, reads the user and the records before writing,
asks for a confirmation before each write, plays the ground truth, states the expected outputs the way gpt-4o
writes numbers ("$23,553"), and the user ends with ###STOP###. Each conversation has one of four styles: plain;
gpt-4o's text beside its calls ("Let me check that for you." + call); one refused call first (a write the tool
turns down on a precondition, or a lookup of a mistyped id) then the right one; or both. Every tool message
holds what the environment really answered.

Expected: every conversation on a sound task kept; every one on a task whose ground truth breaks the policy
(airline/rules.py's docstring names them) rejected with the rule; every one that leaves a wrong final state
(unrewarded) rejected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import ToolCall

CLI = Path(sys.executable).parent / "apigen-mt"
SPLITS = {"airline": "sample", "retail": "dev"}
BROKEN_GROUND_TRUTH = {"airline": {10: {"A16"}, 16: {"A20"}, 19: {"A7", "A10"}, 23: {"A7"}}, "retail": {}}
TEXT_BESIDE = [
    "Let me check that for you.",
    "I'll look that up now.",
    "One moment while I process this.",
    "Let me take care of that.",
]
REFUSED_NOTE = "(the call was refused and changed nothing)"


@dataclass(frozen=True)
class Style:
    text_beside: bool  # gpt-4o's habit of writing a sentence beside its call
    refused: bool  # one call the environment refuses, then the right one


STYLES = [Style(False, False), Style(True, False), Style(False, True), Style(True, True)]


class Conversation:
    """An OpenAI-layout conversation whose calls run on a live environment, so each tool message is real."""

    def __init__(self, domain: Domain, db: JSON, policy: str, style: Style):
        self.env, self.tools, self.style = domain.environment(db), domain.toolkit.tools(), style
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": policy}]
        self.refusals = 0

    def say(self, role: str, text: str) -> None:
        self.messages.append({"role": role, "content": text})

    def call(self, name: str, arguments: dict[str, Any], *, refused: bool = False) -> str:
        call_id = f"call_{len(self.messages)}"
        text = TEXT_BESIDE[len(self.messages) % len(TEXT_BESIDE)] if self.style.text_beside else None
        entry = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        self.messages.append({"role": "assistant", "content": text, "tool_calls": [entry]})
        before = json.dumps(self.env.db, sort_keys=True) if refused else ""
        observation = self.env.step(ToolCall(name=name, arguments=arguments)).observation
        self.messages.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": observation})
        if refused:  # the builder's own check: a refused call really is refused and changes nothing
            assert observation.startswith("Error") and json.dumps(self.env.db, sort_keys=True) == before, (
                name,
                observation,
            )
            self.refusals += 1
        return observation

    def act(self, name: str, arguments: dict[str, Any], refusal: tuple[str, dict[str, Any]] | None) -> None:
        """One ground-truth action: a write is confirmed first and, in the refused style, tried wrongly once."""
        if self.tools[name].spec.writes:
            self.say(
                "assistant",
                f"To confirm, I will run {name.replace('_', ' ')} with {json.dumps(arguments)}. "
                "Shall I proceed (yes/no)?",
            )
            self.say("user", "Yes, please go ahead.")
            if refusal is not None and self.style.refused and not self.refusals:
                self.call(*refusal, refused=True)
        self.call(name, arguments)

    def finish(self, outputs: list[str]) -> list[dict[str, Any]]:
        if any(
            self.tools[m["tool_calls"][0]["function"]["name"]].spec.terminates
            for m in self.messages
            if m.get("tool_calls")
        ):
            return self.messages  # a transfer ends the episode with its tool message, as in tau-bench
        stated = " ".join(f"${int(o):,}" if o.isdigit() else o for o in outputs)  # gpt-4o writes thousands separators
        self.say("assistant", f"Everything is done. {stated}".strip())
        self.say("user", "Thank you, that's all. ###STOP###")
        return self.messages


def mistyped(identifier: str) -> str:
    return identifier[:-1] + ("X" if identifier[-1] != "X" else "Y")


def airline_refusal(name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The write as gpt-4o first gets it wrong, in a way the tool refuses before changing anything."""
    if name == "book_reservation":  # shares that do not add up to the price
        first, *rest = arguments["payment_methods"]
        return name, {**arguments, "payment_methods": [{**first, "amount": first["amount"] - 1}, *rest]}
    if "payment_id" in arguments:  # a payment id misread from the profile
        return name, {**arguments, "payment_id": arguments["payment_id"] + "0"}
    if "reservation_id" in arguments:
        return name, {**arguments, "reservation_id": mistyped(arguments["reservation_id"])}
    return None


def retail_refusal(name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if name == "cancel_pending_order":  # a reason outside the two the tool takes
        return name, {**arguments, "reason": "no longer need"}
    if "payment_method_id" in arguments:
        return name, {**arguments, "payment_method_id": arguments["payment_method_id"] + "0"}
    if "order_id" in arguments:
        return name, {**arguments, "order_id": mistyped(arguments["order_id"])}
    return None


def written_records(domain: Domain, actions: list[dict[str, Any]], key: str) -> list[str]:
    tools = domain.toolkit.tools()
    return list(dict.fromkeys(a["kwargs"][key] for a in actions if tools[a["name"]].spec.writes and key in a["kwargs"]))


def airline_conversation(
    domain: Domain, db: JSON, policy: str, task: dict[str, Any], actions: list[dict[str, Any]], style: Style
):
    chat = Conversation(domain, db, policy, style)
    user = task["user_id"]
    chat.say("user", "Hi, I need some help with my flights.")
    chat.say("assistant", "I'd be happy to help. Could you please provide your user ID?")
    chat.say("user", f"Sure, it's {user}.")
    profile = json.loads(chat.call("get_user_details", {"user_id": user}))
    refusals = [
        airline_refusal(a["name"], a["kwargs"]) for a in actions if domain.toolkit.tools()[a["name"]].spec.writes
    ]
    refusal = next((r for r in refusals if r is not None), None)
    for position, reservation in enumerate(
        written_records(domain, actions, "reservation_id") or profile["reservations"][:1]
    ):
        if style.refused and refusal is None and position == 0:  # nothing to refuse among the writes: a mistyped lookup
            chat.call("get_reservation_details", {"reservation_id": mistyped(reservation)}, refused=True)
        chat.call("get_reservation_details", {"reservation_id": reservation})
    for action in actions:
        chat.act(action["name"], action["kwargs"], airline_refusal(action["name"], action["kwargs"]))
    return chat.finish(task["outputs"])


def retail_conversation(
    domain: Domain, db: JSON, policy: str, task: dict[str, Any], actions: list[dict[str, Any]], style: Style
):
    chat = Conversation(domain, db, policy, style)
    user = task["user_id"]
    chat.say("user", "Hi, I need some help with my orders.")
    chat.say("assistant", "Sure! To verify your identity, could you please share your email address?")
    chat.say("user", f"My email is {db['users'][user]['email']}.")
    chat.call("find_user_id_by_email", {"email": db["users"][user]["email"]})
    profile = json.loads(chat.call("get_user_details", {"user_id": user}))
    writes_refusable = any(
        retail_refusal(a["name"], a["kwargs"]) for a in actions if domain.toolkit.tools()[a["name"]].spec.writes
    )
    for position, order in enumerate(written_records(domain, actions, "order_id") or profile["orders"][:1]):
        if style.refused and not writes_refusable and position == 0:
            chat.call("get_order_details", {"order_id": mistyped(order)}, refused=True)
        chat.call("get_order_details", {"order_id": order})
    new_items = {item for a in actions for item in a["kwargs"].get("new_item_ids", [])}
    for product in dict.fromkeys(p for p, record in db["products"].items() if new_items & set(record["variants"])):
        chat.call("get_product_details", {"product_id": product})
    for action in actions:
        chat.act(action["name"], action["kwargs"], retail_refusal(action["name"], action["kwargs"]))
    return chat.finish(task["outputs"])


BUILDERS = {"airline": airline_conversation, "retail": retail_conversation}


def wrong_final_state(domain: Domain, actions: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The ground truth with its last write gone wrong in a way the tool accepts (or left out): unrewarded."""
    tools = domain.toolkit.tools()
    writes = [i for i, a in enumerate(actions) if tools[a["name"]].spec.writes and not tools[a["name"]].spec.terminates]
    if not writes:
        return None
    last = writes[-1]
    name, arguments = actions[last]["name"], dict(actions[last]["kwargs"])
    if "passengers" in arguments:
        arguments["passengers"] = [{**arguments["passengers"][0], "dob": "1999-09-09"}, *arguments["passengers"][1:]]
    elif name == "update_reservation_baggages":
        arguments["total_baggages"] += 1
    elif "zip" in arguments:
        arguments["zip"] = "00000"
    elif name == "cancel_pending_order":
        arguments["reason"] = "ordered by mistake" if arguments["reason"] == "no longer needed" else "no longer needed"
    elif len(arguments.get("item_ids", [])) > 1:  # one item of several left out
        arguments["item_ids"] = arguments["item_ids"][:-1]
        if "new_item_ids" in arguments:
            arguments["new_item_ids"] = arguments["new_item_ids"][:-1]
    else:
        return actions[:last] + actions[last + 1 :]
    return [*actions[:last], {"name": name, "kwargs": arguments}, *actions[last + 1 :]]


def verify_with_cli(
    tmp_path: Path, domain: str, data_dir: Path, trajectories: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str]:
    """The real console script with the project's defaults, as a user runs it on a file of conversations: the
    verdicts and the summary line."""
    given, verdicts = tmp_path / f"{domain}.jsonl", tmp_path / f"{domain}-verdicts.jsonl"
    given.write_text("".join(json.dumps(t) + "\n" for t in trajectories), encoding="utf-8")
    command = [CLI, "verify", "--domain", domain, "--data-dir", data_dir, "--input", given, "--output", verdicts]
    finished = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    return [json.loads(line) for line in verdicts.read_text(encoding="utf-8").splitlines()], finished.stderr.strip()


@pytest.fixture(scope="module", params=["airline", "retail"])
def scored(request, taubench_dir, taubench_tasks, tmp_path_factory):
    """Every conversation built for the domain's tasks, with its kind and style, and the verdict `verify` gave it."""
    name = request.param
    domain, data_dir = get_domain(name), taubench_dir / name
    db, policy = domain.load(data_dir), domain.policy_text(data_dir)
    built = []
    for index, task in enumerate(taubench_tasks(name, SPLITS[name])):
        broken = index in BROKEN_GROUND_TRUTH[name]
        style = STYLES[index % len(STYLES)]
        built.append(
            (
                "broken" if broken else "sound",
                index,
                style,
                BUILDERS[name](domain, db, policy, task, task["actions"], style),
            )
        )
        wrong = None if broken else wrong_final_state(domain, task["actions"])
        if wrong is not None:
            built.append(("unrewarded", index, STYLES[0], BUILDERS[name](domain, db, policy, task, wrong, STYLES[0])))
    tasks = taubench_tasks(name, SPLITS[name])
    verdicts, summary = verify_with_cli(
        tmp_path_factory.mktemp(name),
        name,
        data_dir,
        [{"blueprint": tasks[index], "messages": messages} for _, index, _, messages in built],
    )
    entries = [
        (kind, index, style, messages, verdict)
        for (kind, index, style, messages), verdict in zip(built, verdicts, strict=True)
    ]
    return name, entries, summary


def of_kind(scored, kind: str) -> list[tuple]:
    return [entry for entry in scored[1] if entry[0] == kind]


def test_every_conversation_on_a_sound_task_is_kept(scored):
    name, entries, summary = scored
    sound = of_kind(scored, "sound")
    lost = [(index, verdict["reasons"]) for _, index, _, _, verdict in sound if not verdict["accepted"]]
    assert lost == [], name
    assert len(sound) == {"airline": 21, "retail": 20}[name]
    # The command's summary counts the same: only the sound tasks' conversations are accepted.
    rewarded = sum(verdict["reward"] == 1.0 for *_, verdict in entries)
    assert summary.startswith(f"{rewarded} of {len(entries)} trajectories reach reward 1.0, {len(sound)} accepted, "), (
        summary
    )


def test_both_classes_of_former_loss_are_among_the_kept(scored):
    """Text beside a call (rule A2/R5 as it was) and a refused call that breaks a rule as written, each in several."""
    name = scored[0]
    sound = of_kind(scored, "sound")
    beside = [
        index
        for _, index, style, messages, _ in sound
        if style.text_beside and any(m.get("tool_calls") and m["content"] for m in messages)
    ]
    refused = [index for _, index, style, _, _ in sound if style.refused]
    warned = [
        index
        for _, index, style, _, verdict in sound
        if style.refused and any(w.startswith("[") and w.endswith(REFUSED_NOTE) for w in verdict["warnings"])
    ]
    assert len(beside) >= 8 and len(refused) >= 8, (beside, refused)
    # A refused write the old verifier rejected: the rule it breaks is named, as a warning.
    assert len(warned) >= {"airline": 4, "retail": 8}[name], warned
    for _, index, style, messages, verdict in sound:
        refused_calls = [m for m in messages if m["role"] == "tool" and m["content"].startswith("Error")]
        assert len(refused_calls) == style.refused, index


def test_every_conversation_on_a_task_whose_ground_truth_breaks_the_policy_is_rejected_with_the_rule(scored):
    name = scored[0]
    broken = of_kind(scored, "broken")
    assert {index for _, index, *_ in broken} == set(BROKEN_GROUND_TRUTH[name])
    for _, index, _, _, verdict in broken:
        assert verdict["reward"] == 1.0 and not verdict["accepted"] and verdict["attribution"] == "agent"
        rules = {violation[1 : violation.index("]")] for violation in verdict["policy_violations"]}
        assert rules == BROKEN_GROUND_TRUTH[name][index], (index, verdict["policy_violations"])


def test_every_unrewarded_conversation_is_rejected(scored):
    name = scored[0]
    unrewarded = of_kind(scored, "unrewarded")
    assert len(unrewarded) == {"airline": 14, "retail": 19}[name]  # one for each sound task that writes
    for _, index, _, _, verdict in unrewarded:
        assert (verdict["reward"], verdict["state_match"], verdict["accepted"]) == (0.0, False, False), index
