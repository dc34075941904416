"""Scripted roles for Phase-1 run-driver tests (test doubles, never a backend of the main job).

One function answers every role, told apart by the system prompt, since the test configs give every role
one model. Each proposal's outcome follows from the sampled user (`kind`), so a test can compute what every
proposal must become:

- good: a valid address change, approved by the reviewers: accepted in round 0;
- revised: the engine dies on the user's first request (the driver retries), then round 0 has an unknown
  argument (a format rejection) and round 1, which answers the feedback, is accepted;
- hopeless: the unknown argument in every round: rejected at `format` in the last round;
- disliked: valid, but the reviewers vote 0 on correctness and creativity: rejected at `review`;
- broken: the proposer's endpoint fails: `failed`, one row;
- twin: valid, with an instruction nearly the same for every twin user: the first one kept is accepted,
  every later one rejected as a near-duplicate.

Recombination's rewriter joins the parts' instructions; the reviewers judge the result as any other task.

For Phase 2 the agent authenticates the user by email and makes the address change; the human says the
instruction, then ###STOP### once the agent has answered in text.
"""

from __future__ import annotations

import json
import re
import zlib

from apigen_mt.blueprints.review import CRITERIA
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, ModelUnavailable
from apigen_mt.simulators.types import ToolCall

KINDS = ("good", "revised", "hopeless", "disliked", "broken", "twin")
TWIN_ADDRESS = {
    "address1": "12 Harbor Road",
    "address2": "Suite 3",
    "city": "Springfield",
    "state": "IL",
    "country": "USA",
    "zip": "62701",
}
STREETS = ("Maple Avenue", "Cedar Lane", "Birch Court", "Willow Way", "Aspen Drive", "Juniper Street")
DISLIKED = "for no particular reason"
TWIN_TEXT = (
    "You have just moved across the country for a new job and want every future order shipped to your new home. "
    "Ask the agent to replace the default shipping address on your account with 12 Harbor Road, Suite 3, "
    "Springfield, IL 62701, USA. Confirm the new address when the agent reads it back to you, and say that "
    "nothing else needs to change on the account today."
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def kind(user_id: str) -> str:
    return KINDS[zlib.crc32(user_id.encode()) % len(KINDS)]


def address_for(user_id: str) -> dict[str, str]:
    if kind(user_id) == "twin":
        return dict(TWIN_ADDRESS)
    number = zlib.crc32(f"address/{user_id}".encode())
    street = STREETS[number % len(STREETS)]
    return {
        "address1": f"{100 + number % 900} {street}",
        "address2": "",
        "city": "Portland",
        "state": "OR",
        "country": "USA",
        "zip": f"97{number % 1000:03d}",
    }


def instruction_for(user_id: str, user: dict) -> str:
    email = user["email"]
    if kind(user_id) == "twin":
        return f"You are the customer with the email {email}. {TWIN_TEXT}"
    name = f"{user['name']['first_name']} {user['name']['last_name']}"
    new = address_for(user_id)
    text = (
        f"You are {name}, email {email}, user {user_id}, now living at {user['address']['address1']} in "
        f"{user['address']['city']}. Change your default address to {new['address1']}, {new['city']}, "
        f"{new['state']} {new['zip']}, {new['country']}."
    )
    return f"{text} You want this {DISLIKED}." if kind(user_id) == "disliked" else text


def _proposal(request: ChatRequest, first_requests: set[str]):
    prompt = request.messages[-1].content or ""
    user_id = re.search(r"user id: (\S+)", prompt).group(1)
    user = json.loads(re.search(rf"^users {re.escape(user_id)}: (.*)$", prompt, re.MULTILINE).group(1))
    scenario = kind(user_id)
    if scenario == "broken":
        return ChatResponse(model="scripted-proposer", error="HTTP 503: the scripted proposer is down")
    if scenario == "revised" and user_id not in first_requests:
        first_requests.add(user_id)
        raise ModelUnavailable("the scripted engine died")
    arguments = {"user_id": user_id, **address_for(user_id)}
    revising = "# What to improve" in prompt or "# Your previous attempt" in prompt
    if scenario == "hopeless" or (scenario == "revised" and not revising):
        arguments["note"] = "asap"  # not a parameter of the tool: the format check rejects it
    task = {
        "thought": "The customer moved.",
        "instruction": instruction_for(user_id, user),
        "actions": [{"name": "modify_user_address", "arguments": arguments}],
        "outputs": [],
    }
    return json.dumps(task)


def _review(request: ChatRequest) -> str:
    disliked = DISLIKED in (request.messages[-1].content or "")
    scores = {criterion: int(not (disliked and criterion in ("correctness", "creativity"))) for criterion in CRITERIA}
    return json.dumps({"reflection": "No reason is given." if disliked else "Fine.", **scores})


def _rewrite(request: ChatRequest) -> str:
    # Recombination: the parts' instructions, joined, keep every detail the checks look for.
    parts = re.findall(r"# Part \d+\n(.*?)(?=\n\n# Part |\n\nThe combined task)", request.messages[-1].content, re.S)
    return json.dumps({"instruction": " Then: ".join(json.loads(part)["instruction"] for part in parts)})


def _agent(request: ChatRequest):
    opening = next((m.content for m in request.messages if m.role == "user"), "") or ""
    observations = [m.content for m in request.messages if m.role == "tool"]
    if not observations:
        return ToolCall(name="find_user_id_by_email", arguments={"email": _EMAIL.search(opening).group(0)})
    if len(observations) == 1:
        user_id = observations[0].strip()
        return ToolCall(name="modify_user_address", arguments={"user_id": user_id, **address_for(user_id)})
    return "Your default address is updated."


def _human(request: ChatRequest) -> str:
    # The human's own turns are the assistant's in its view: the first one says the task, the next one ends.
    if any(message.role == "assistant" for message in request.messages):
        return "Thanks, that is all. ###STOP###"
    return re.search(r"# Your task\n(.*)\n", request.messages[0].content).group(1)


def factory(name: str) -> ScriptedChatModel:
    first_requests: set[str] = set()  # per worker process: the engine "dies" once per revised user

    def script(request: ChatRequest):
        system = request.messages[0].content or ""
        if system.startswith("You design tasks"):
            return _proposal(request, first_requests)
        if system.startswith("You review tasks"):
            return _review(request)
        if system.startswith("You write instructions for a simulated customer"):
            return _rewrite(request)
        if system.startswith("A task written for training"):
            return "<plan>1. Fix what the check names.</plan>"
        return _agent(request) if request.tools else _human(request)

    return ScriptedChatModel(script, model_id=f"scripted-{name}")
