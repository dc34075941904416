"""The proposer: its prompt and JSON schema, the refusal draw, and reading its replies in every form."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from importlib.resources import files

import pytest
from jsonschema import Draft202012Validator

from apigen_mt.blueprints.proposer import (
    ProposalError,
    ProposerSettings,
    is_refusal,
    parse_proposal,
    propose,
    proposer_request,
)
from apigen_mt.blueprints.samplers import SampledContext, SamplerSettings, sample_context
from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel
from apigen_mt.simulators.chat import ChatResponse, ModelUnavailable
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import Blueprint

RETAIL = get_domain("retail")
USER = "christine_king_9954"
CANCEL = {"name": "cancel_pending_order", "arguments": {"order_id": "#W1077442", "reason": "ordered by mistake"}}
INSTRUCTION = "You are Christine King (christine.king7156@example.com). Cancel order #W1077442: ordered by mistake."


@pytest.fixture(scope="module")
def context() -> SampledContext:
    db = RETAIL.load()
    specs = {spec.name: spec for spec in RETAIL.toolkit.specs()}
    examples = json.loads(files("apigen_mt.simulators.domains.retail").joinpath("example_tasks.json").read_text())
    return SampledContext(
        domain="retail",
        user_id=USER,
        tools=[specs[name] for name in ("find_user_id_by_email", "get_order_details", "cancel_pending_order")],
        walk=["get_order_details", "cancel_pending_order"],
        records={"users": {USER: db["users"][USER]}, "orders": {"#W1077442": db["orders"]["#W1077442"]}},
        policy_excerpt="## Cancelling a pending order\nOnly pending orders can be cancelled.",
        rules=["R7: Cancel only pending orders."],
        persona="A retired teacher who likes short answers.",
        examples=[Blueprint.model_validate(examples[1])],
        context_ids=["walk:get_order_details>cancel_pending_order", f"user:{USER}", "order:#W1077442"],
        seed=17,
    )


def _task(**overrides) -> dict:
    return {
        "thought": "A pending order to cancel.",
        "instruction": INSTRUCTION,
        "actions": [CANCEL],
        "outputs": [],
        **overrides,
    }


def _prompt(request) -> str:
    return request.messages[-1].content


# --- the request ----------------------------------------------------------------------------------------


def test_structured_request_constrains_the_reply_to_a_task_of_the_sampled_tools(context):
    request = proposer_request(context, ProposerSettings(temperature=0.5, max_tokens=900), refusal=False)
    assert request.reply_format == "text" and request.tools == []  # the tools are described, not offered
    assert (request.sampling.temperature, request.sampling.max_tokens) == (0.5, 900)
    schema = request.json_schema
    assert list(schema["properties"]) == ["thought", "instruction", "actions", "outputs"]  # reasoning comes first
    validator = Draft202012Validator(schema)
    validator.validate(_task())
    # Stage 1 rejects a task without a call (an information request reads the facts it reports): never offered.
    assert not validator.is_valid(_task(actions=[], outputs=["pending"]))
    assert not validator.is_valid(_task(thought="and so on " * 200))  # capped, so a grammar closes the JSON in time
    assert not validator.is_valid(_task(actions=[{"name": "modify_user_address", "arguments": {}}]))  # not sampled
    assert not validator.is_valid(_task(actions=[{"name": "cancel_pending_order", "arguments": {"order_id": "#W1"}}]))


def test_a_refusal_task_may_call_only_tools_that_do_not_write(context):
    request = proposer_request(context, ProposerSettings(), refusal=True)
    validator = Draft202012Validator(request.json_schema)
    assert not validator.is_valid(_task(actions=[]))  # a refusal shows the look-ups that justify it
    validator.validate(_task(actions=[{"name": "get_order_details", "arguments": {"order_id": "#W1077442"}}]))
    assert not validator.is_valid(_task())  # the cancellation writes
    assert "# This task is a refusal" in _prompt(request)
    assert "The forbidden request involves these tools" in _prompt(request)
    assert "# This task is a refusal" not in _prompt(proposer_request(context, ProposerSettings(), refusal=False))


def test_the_prompt_carries_the_sampled_context(context):
    prompt = _prompt(proposer_request(context, ProposerSettings(), refusal=False))
    for expected in (
        "Only pending orders can be cancelled.",
        "R7: Cancel only pending orders.",
        f"user id: {USER}",
        "persona: A retired teacher who likes short answers.",
        "#W1077442",
        '"name": "cancel_pending_order"',
        "get_order_details -> cancel_pending_order",
        context.examples[0].instruction,
        "Write one new task for this customer.",
    ):
        assert expected in prompt


def test_a_context_from_the_samplers_makes_a_valid_request():
    db = RETAIL.load()
    for seed in range(3):
        sampled = sample_context(RETAIL, db, seed=seed, settings=SamplerSettings())
        for refusal in (False, True):
            request = proposer_request(sampled, ProposerSettings(), refusal=refusal)
            Draft202012Validator.check_schema(request.json_schema)
            assert f"user id: {sampled.user_id}" in _prompt(request)


def test_an_empty_policy_excerpt_leaves_the_policy_section_out(context):
    prompt = _prompt(proposer_request(replace(context, policy_excerpt=""), ProposerSettings(), refusal=False))
    assert "# Policy" not in prompt and prompt.startswith("# Rules to keep in mind")


def test_unstructured_request_asks_for_thought_and_answer_tags(context):
    request = proposer_request(context, ProposerSettings(structured=False), refusal=False)
    assert request.json_schema is None
    assert "<thought></thought>" in request.messages[0].content and "<answer></answer>" in request.messages[0].content


def test_a_revision_shows_the_previous_task_and_the_plan(context):
    previous = Blueprint(instruction="Cancel my order.", actions=[CANCEL])
    plan = "1. Give the customer's email in the instruction."
    prompt = _prompt(proposer_request(context, ProposerSettings(), refusal=False, feedback=plan, previous=previous))
    shown = prompt.split("# Your previous attempt\n")[1].split("\n\n#")[0]
    assert json.loads(shown) == {"instruction": "Cancel my order.", "actions": [CANCEL], "outputs": []}
    assert f"# What to improve\n{plan}" in prompt
    unreadable = _prompt(proposer_request(context, ProposerSettings(), refusal=False, feedback="the reply is empty"))
    assert "# Your previous attempt could not be used\nthe reply is empty" in unreadable


def test_sampling_seed_differs_per_round_and_stays_unset_without_a_base_seed(context):
    seeded = ProposerSettings(seed=3)
    seeds = {proposer_request(context, seeded, refusal=False, round=r).sampling.seed for r in range(3)}
    assert len(seeds) == 3 and all(0 <= seed < 2**31 for seed in seeds)
    assert proposer_request(context, seeded, refusal=False).sampling.seed in seeds  # deterministic
    assert proposer_request(context, ProposerSettings(), refusal=False).sampling.seed is None


def test_settings_refuse_unknown_options():
    with pytest.raises(ValueError):
        ProposerSettings(refusal_rate=0.2)


# --- the refusal draw -----------------------------------------------------------------------------------


def test_is_refusal_is_a_seeded_draw_at_the_given_share():
    draws = [is_refusal(seed, 0.1) for seed in range(2000)]
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert draws == [is_refusal(seed, 0.1) for seed in range(2000)]
    assert not any(is_refusal(seed, 0.0) for seed in range(100))
    assert all(is_refusal(seed, 1.0) for seed in range(100))
    with pytest.raises(ValueError, match="between 0 and 1"):
        is_refusal(1, 1.5)


# --- reading replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_task()),
        f"<thought>The order is pending.</thought>\n<answer>{json.dumps(_task())}</answer>",
        f"<thought>x</thought><answer>\n```json\n{json.dumps(_task())}\n```\n</answer>",
        f"Here is the task:\n```json\n{json.dumps(_task())}\n```",
        json.dumps({"instruction": INSTRUCTION, "actions": [{"name": CANCEL["name"], "kwargs": CANCEL["arguments"]}]}),
    ],
    ids=["structured", "tagged", "fenced-in-answer", "fenced", "kwargs-without-outputs"],
)
def test_parse_reads_every_form_and_takes_user_and_provenance_from_the_context(context, text):
    blueprint = parse_proposal(text, context, round=2)
    assert isinstance(blueprint, Blueprint)
    assert (blueprint.domain, blueprint.user_id, blueprint.instruction) == ("retail", USER, INSTRUCTION)
    assert [call.model_dump() for call in blueprint.actions] == [CANCEL] and blueprint.outputs == []
    assert blueprint.provenance.model_dump() == {
        "context_ids": context.context_ids,
        "seed": 17,
        "round": 2,
        "parents": [],
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("   ", "the reply is empty"),
        ("I would cancel the order.", "neither a JSON object nor an <answer>"),
        ('{"instruction": "Cancel", "actions": [', "the reply is not valid JSON"),
        ('<thought>x</thought><answer>{"instruction": ', "never closed"),
        ("<answer>cancel it</answer>", "the <answer> section is not valid JSON"),
        ("<answer>[1, 2]</answer>", "the <answer> section is JSON but not an object"),
        (json.dumps(_task(instruction=" ")), "no instruction"),
        (json.dumps({"instruction": INSTRUCTION}), 'no "actions" list'),
        (json.dumps(_task(actions=["cancel"])), "actions.0"),
        (json.dumps(_task(outputs=[3])), "outputs.0"),
    ],
)
def test_parse_says_why_a_reply_is_not_a_task(context, text, reason):
    error = parse_proposal(text, context)
    assert isinstance(error, ProposalError) and reason in error.reason


# --- propose --------------------------------------------------------------------------------------------


def test_propose_returns_the_blueprint_text_and_model(context):
    model = ScriptedChatModel([json.dumps(_task())], model_id="proposer-a")
    result = asyncio.run(propose(model, context, ProposerSettings(), refusal=False, round=1))
    assert result.blueprint is not None and result.blueprint.provenance.round == 1
    assert (result.problem, result.error, result.model_id) == (None, None, "proposer-a")
    assert result.text == json.dumps(_task())
    assert model.requests[0].json_schema is not None


def test_propose_separates_an_unreadable_reply_from_a_backend_error(context):
    cut = RawText('{"thought": "The order', finish_reason="length")
    model = ScriptedChatModel([cut, ChatResponse(error="HTTP 500 after 3 retries")])
    settings = ProposerSettings(max_tokens=64)
    unreadable = asyncio.run(propose(model, context, settings, refusal=False))
    assert unreadable.blueprint is None and unreadable.error is None
    assert "not valid JSON" in unreadable.problem and "cut off at max_tokens=64" in unreadable.problem
    failed = asyncio.run(propose(model, context, settings, refusal=False))
    assert failed.problem is None and failed.error == "HTTP 500 after 3 retries"


def test_a_dead_engine_propagates(context):
    model = ScriptedChatModel([ModelUnavailable("engine restarting")])
    with pytest.raises(ModelUnavailable):
        asyncio.run(propose(model, context, ProposerSettings(), refusal=False))


def test_the_structured_proposal_fits_its_token_budget():
    from apigen_mt.blueprints.proposer import MAX_OUTPUTS, proposal_schema
    from apigen_mt.simulators.xlam import text_field_limit

    tools = RETAIL.toolkit.specs()
    small, large = proposal_schema(tools, refusal=False, max_tokens=256), proposal_schema(tools, refusal=False)
    Draft202012Validator.check_schema(small)
    fields = ("thought", "instruction")
    caps = [small["properties"][name]["maxLength"] for name in fields]
    # Every free-text field together stays within what 256 tokens can close, and a larger budget allows more.
    assert sum(caps) + MAX_OUTPUTS * small["properties"]["outputs"]["items"]["maxLength"] <= text_field_limit(256)
    assert all(cap < large["properties"][name]["maxLength"] for cap, name in zip(caps, fields, strict=True))
    lookup = {"name": "get_order_details", "arguments": {"order_id": "#W1"}}
    brief = {
        "thought": "One look-up.",
        "instruction": "Ask for #W1's status.",
        "actions": [lookup],
        "outputs": ["pending"],
    }
    assert Draft202012Validator(small).is_valid(brief)
    assert not Draft202012Validator(small).is_valid(brief | {"thought": "x" * 2000})
