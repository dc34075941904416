"""The simulated human: role flipping, best-of-N with a judge, guards, structured turns, human-error checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, Completion
from apigen_mt.simulators.human import (
    STOP,
    HumanSettings,
    HumanSimulator,
    HumanTurn,
    revealed_values,
    turn_problem,
)
from apigen_mt.simulators.human_prompts import (
    AGENT_GREETING,
    JUDGE_MAX_TOKENS,
    JUDGE_SCHEMA,
    OUT_OF_SCOPE,
    TRANSFER,
    human_turn_schema,
    human_view,
    judge_messages,
    parse_score,
)
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall
from apigen_mt.simulators.xlam import CHARS_PER_TOKEN_BOUND, text_field_limit

DOMAINS = Path(__file__).resolve().parents[1] / "simulators" / "domains"
INSTRUCTION = (
    "You are Christine King and your email is christine.king7156@example.com. You want order #W1077442 "
    "cancelled because you ordered it by mistake."
)


def example_instructions(domain: str) -> list[str]:
    return [task["instruction"] for task in json.loads((DOMAINS / domain / "example_tasks.json").read_text())]


def respond(human: HumanSimulator, conversation: list[Message]) -> HumanTurn:
    return asyncio.run(human.respond(conversation))


def call_message(name: str, arguments: dict, call_id: str, content: str | None = None) -> Message:
    call = OpenAIToolCall.of(ToolCall(name=name, arguments=arguments), call_id)
    return Message(role="assistant", content=content, tool_calls=[call])


POLICY = Message(role="system", content="You are a retail agent. Follow the policy.")
CONVERSATION = [
    POLICY,
    Message(role="user", content="Hi, I need to cancel an order."),
    Message(role="assistant", content="Sure. What is your email?"),
    Message(role="user", content="It's christine.king7156@example.com."),
    call_message("find_user_id_by_email", {"email": "christine.king7156@example.com"}, "call_0"),
    Message(role="tool", tool_call_id="call_0", name="find_user_id_by_email", content="christine_king_9954"),
    call_message("get_order_details", {"order_id": "#W1077442"}, "call_1", content="Let me look that up."),
    Message(role="tool", tool_call_id="call_1", name="get_order_details", content='{"status": "pending"}'),
    Message(role="assistant", content="Found you. Which order should I cancel?"),
]


def judge_by_candidate(scores: dict[str, str]):
    """A judge whose reply depends on the candidate it is shown, so concurrency cannot reorder the test."""

    def reply(request: ChatRequest) -> str:
        shown = request.messages[-1].content or ""
        return next(answer for candidate, answer in scores.items() if shown.endswith(candidate))

    return reply


# --- what the human model sees ----------------------------------------------------------------------


def test_the_human_sees_the_dialogue_with_roles_flipped_and_no_tools():
    model = ScriptedChatModel(["Order #W1077442, please."])
    human = HumanSimulator(model, INSTRUCTION, settings=HumanSettings(seed=11))
    turn = respond(human, CONVERSATION)

    (request,) = model.requests
    system, *dialogue = request.messages
    assert system.role == "system" and INSTRUCTION in (system.content or "") and STOP in (system.content or "")
    assert "retail agent" not in (system.content or "")
    assert [(m.role, m.content) for m in dialogue] == [
        ("user", AGENT_GREETING),
        ("assistant", "Hi, I need to cancel an order."),
        ("user", "Sure. What is your email?"),
        ("assistant", "It's christine.king7156@example.com."),
        ("user", "Found you. Which order should I cancel?"),
    ]
    assert all(m.tool_calls is None and m.role != "tool" for m in dialogue)
    assert request.tools == [] and request.json_schema is None and request.reply_format == "text"
    sampling = request.sampling
    assert (sampling.n, sampling.temperature, sampling.max_tokens, sampling.seed) == (1, 0.7, 256, 11)
    assert (turn.text, turn.ending, turn.error, turn.retries) == ("Order #W1077442, please.", None, None, 0)
    assert turn.candidates == ["Order #W1077442, please."] and turn.scores == [None]


def test_the_first_turn_answers_the_greeting_and_a_persona_is_told():
    model = ScriptedChatModel(["Hi, I'd like to cancel something I ordered."])
    human = HumanSimulator(model, INSTRUCTION, persona="Curt; answers in few words.", settings=HumanSettings())
    respond(human, [POLICY])
    system, greeting = model.requests[0].messages
    assert "Curt; answers in few words." in (system.content or "")
    assert (greeting.role, greeting.content) == ("user", AGENT_GREETING)


def test_neighbouring_agent_replies_are_joined_into_one_user_turn():
    model = ScriptedChatModel(["Yes."])
    conversation = [
        POLICY,
        Message(role="user", content="Hello"),
        Message(role="assistant", content="One moment."),
        Message(role="assistant", content="Anything else?"),
    ]
    respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings()), conversation)
    assert [(m.role, m.content) for m in model.requests[0].messages[1:]] == [
        ("user", AGENT_GREETING),
        ("assistant", "Hello"),
        ("user", "One moment.\n\nAnything else?"),
    ]


# --- best-of-N --------------------------------------------------------------------------------------


def test_best_of_n_samples_n_in_one_request_and_keeps_the_top_score():
    candidates = ["I forget my email.", "It's order #W1077442.", "Order #W1077442, thanks.", "Cancel everything!"]
    sampled = [Completion(text=c, content=c, prompt_tokens=100, completion_tokens=5) for c in candidates]
    model = ScriptedChatModel(sampled)
    verdicts = [json.dumps({"critique": "ok", "score": score}) for score in (1, 9, 9, 4)]
    judge = ScriptedChatModel(judge_by_candidate(dict(zip(candidates, verdicts))), model_id="judge")
    settings = HumanSettings(best_of_n=4, seed=3)
    turn = respond(HumanSimulator(model, INSTRUCTION, judge=judge, settings=settings), CONVERSATION)

    assert len(model.requests) == 1 and model.requests[0].sampling.n == 4
    assert turn.candidates == candidates and turn.scores == [1.0, 9.0, 9.0, 4.0]
    assert turn.text == "It's order #W1077442." and turn.judge_error is None  # the first of two equal scores
    assert len(judge.requests) == 4
    shown = []
    for request in judge.requests:
        body = request.messages[-1].content or ""
        assert request.json_schema == JUDGE_SCHEMA and request.sampling.temperature == 0.0
        assert request.sampling.max_tokens == JUDGE_MAX_TOKENS
        assert INSTRUCTION in body and "Agent: Found you. Which order should I cancel?" in body
        shown.append(body.rsplit("\n", 1)[-1])
    assert sorted(shown) == sorted(candidates)
    assert (turn.prompt_tokens, turn.completion_tokens) == (100, 20)  # n completions share one prompt


def test_the_judge_critiques_before_it_scores_within_its_token_limit():
    import jsonschema

    assert list(JUDGE_SCHEMA["properties"]) == ["critique", "score"] and JUDGE_SCHEMA["required"] == [
        "critique",
        "score",
    ]
    valid = jsonschema.Draft202012Validator(JUDGE_SCHEMA)
    cap = JUDGE_SCHEMA["properties"]["critique"]["maxLength"]
    longest = json.dumps({"critique": "x" * cap, "score": 10})
    assert valid.is_valid(json.loads(longest)) and not valid.is_valid({"critique": "x" * (cap + 1), "score": 10})
    assert not valid.is_valid({"score": 7}) and not valid.is_valid({"critique": "ok", "score": 11})
    # The longest critique and its score fit in what the judge's max_tokens can write.
    assert len(longest) <= CHARS_PER_TOKEN_BOUND * JUDGE_MAX_TOKENS
    (system, _) = judge_messages(INSTRUCTION, human_view(CONVERSATION), "Yes.")
    prompt = system.content or ""
    assert prompt.index('"critique"') < prompt.index('"score"') and "First write a short critique" in prompt


def test_the_judge_may_answer_in_free_text_with_a_score_tag():
    candidates = ["My email is christine.king7156@example.com.", "I don't remember.", "Hello?"]
    verdicts = ["It matches the task. <score>8</score>", "Unhelpful. <score>1</score>", "no verdict"]
    judge = ScriptedChatModel(judge_by_candidate(dict(zip(candidates, verdicts))))
    human = HumanSimulator(ScriptedChatModel(candidates), INSTRUCTION, judge=judge, settings=HumanSettings(best_of_n=3))
    turn = respond(human, CONVERSATION)
    assert turn.scores == [8.0, 1.0, None] and turn.text == candidates[0]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"critique": "Agrees with the task.", "score": 7}', 7.0),
        ('{"score": 7}', 7.0),
        ("<score> 10 </score>", 10.0),
        ("first <score>3</score> then <score>6</score>", 6.0),
        ('{"score": 11}', None),
        ('{"score": true}', None),
        ("<score>-1</score>", None),
        ("seven", None),
        ('{"mark": 5}', None),
    ],
)
def test_parse_score(reply: str, score: float | None):
    assert parse_score(reply) == score


def test_a_failing_judge_leaves_the_first_usable_candidate_and_is_recorded():
    model = ScriptedChatModel(["", "I want to cancel #W1077442.", "Cancel it please."])
    judge = ScriptedChatModel(lambda request: ChatResponse(error="judge endpoint returned 503"))
    turn = respond(HumanSimulator(model, INSTRUCTION, judge=judge, settings=HumanSettings(best_of_n=3)), CONVERSATION)
    assert turn.text == "I want to cancel #W1077442." and turn.error is None
    assert turn.judge_error == "judge endpoint returned 503" and turn.scores == [None, None, None]
    assert len(judge.requests) == 2  # the empty candidate is never judged


def test_one_candidate_needs_no_judge():
    judge = ScriptedChatModel([])  # any request would exhaust it
    single = HumanSimulator(ScriptedChatModel(["Hi."]), INSTRUCTION, judge=judge, settings=HumanSettings())
    assert respond(single, [POLICY]).text == "Hi." and judge.requests == []
    model = ScriptedChatModel(["", "Hi.", " "])  # one usable candidate of three leaves no choice either
    only_one = HumanSimulator(model, INSTRUCTION, judge=judge, settings=HumanSettings(best_of_n=3))
    assert respond(only_one, [POLICY]).text == "Hi." and judge.requests == []


# --- guards -----------------------------------------------------------------------------------------


def test_empty_and_role_breaking_turns_are_retried_with_a_new_seed():
    model = ScriptedChatModel(["   ", "Hello! How can I help you today?", "I need to cancel an order."])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings(seed=5)), [POLICY])
    assert (turn.text, turn.retries, turn.error) == ("I need to cancel an order.", 2, None)
    assert [request.sampling.seed for request in model.requests] == [5, 6, 7]


def test_retries_are_bounded_and_end_in_an_error():
    model = ScriptedChatModel(["", "As an AI, I cannot place orders."])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings(max_retries=1)), [POLICY])
    assert len(model.requests) == 2 and turn.retries == 1
    assert (turn.text, turn.ending) == ("", None)
    assert turn.error == (
        "the human model gave 2 empty, role-breaking or malformed turns in 2 request(s); "
        "the last: it claims to be an AI"
    )


def test_a_backend_error_is_retried_then_reported_as_it_is():
    overflow = ChatResponse(error="This model's maximum context length is 2048 tokens")
    model = ScriptedChatModel([overflow, overflow, overflow])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings()), CONVERSATION)
    assert len(model.requests) == 3 and turn.error == overflow.error and turn.candidates == []

    model = ScriptedChatModel([overflow, "Order #W1077442."])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings()), CONVERSATION)
    assert (turn.text, turn.retries, turn.error) == ("Order #W1077442.", 1, None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  \n ",
        "Hello! How can I help you today?",
        "Is there anything else I can help you with?",
        "What can I do for you?",
        "As an AI language model, I cannot do that.",
        "I'm an AI and have no orders.",
        "I am your virtual assistant.",
        "I am a customer service agent.",
        '[{"name": "cancel_pending_order", "arguments": {"order_id": "#W1077442"}}]',
        "<tool_call>cancel</tool_call>",
        "Please cancel it.\nAgent: Sure, it is cancelled.",
        "Assistant: Your order is cancelled.",
    ],
)
def test_turn_problem_flags_empty_and_role_breaking_turns(text: str):
    assert turn_problem(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "Hi, can you help me cancel an order?",
        "I am a teacher and I ordered this by mistake.",
        "How can I make sure the refund goes to my card?",
        "The agent at the store told me it was fine.",
        "My name is Christine King. The order is #W1077442.",
        "Yes, please go ahead.",
    ],
)
def test_turn_problem_leaves_ordinary_customer_turns(text: str):
    assert turn_problem(text) is None


def test_stop_on_its_own_is_a_complete_turn_but_a_role_break_beside_it_is_not():
    turn = respond(HumanSimulator(ScriptedChatModel([STOP]), INSTRUCTION, settings=HumanSettings()), CONVERSATION)
    assert (turn.text, turn.ending) == (STOP, "stop")
    model = ScriptedChatModel([f"How can I help you? {STOP}", f"Thanks, bye. {STOP}"])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings()), CONVERSATION)
    assert (turn.text, turn.ending, turn.retries) == (f"Thanks, bye. {STOP}", "stop", 1)


# --- structured turns -------------------------------------------------------------------------------


def test_a_structured_stop_is_stored_as_text_with_the_stop_marker():
    model = ScriptedChatModel(['{"message": "That is all, thank you.", "stop": true}'])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings(structured=True)), CONVERSATION)
    (request,) = model.requests
    assert request.json_schema == human_turn_schema(text_field_limit(HumanSettings().max_tokens)) and '"stop"' in (
        request.messages[0].content or ""
    )
    assert (turn.text, turn.ending) == (f"That is all, thank you. {STOP}", "stop")
    assert turn.text.endswith(STOP)


def test_structured_turns_without_stop_and_with_an_empty_goodbye():
    model = ScriptedChatModel(['{"message": "It is #W1077442.", "stop": false}', '{"message": "", "stop": true}'])
    human = HumanSimulator(model, INSTRUCTION, settings=HumanSettings(structured=True))
    assert (respond(human, CONVERSATION).text, respond(human, CONVERSATION).text) == ("It is #W1077442.", STOP)


def test_an_undecodable_structured_turn_is_retried():
    model = ScriptedChatModel(
        [
            RawText('{"message": "It is #W10', finish_reason="length"),
            '{"message": "x", "stop": "no"}',
            '{"message": "It is #W1077442.", "stop": false}',
        ]
    )
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings(structured=True)), CONVERSATION)
    assert (turn.text, turn.retries) == ("It is #W1077442.", 2)


# --- thinking and the tau2-bench endings ------------------------------------------------------------


def test_a_stop_written_only_while_thinking_does_not_end_the_chat():
    thought = f"<think>The task is nearly done, I could send {STOP} now.</think>\n\nMy order is #W1077442."
    model = ScriptedChatModel([thought, f"<think>Done? Not yet: no {STOP}.</think>{STOP}"])
    human = HumanSimulator(model, INSTRUCTION, settings=HumanSettings())
    turn = respond(human, CONVERSATION)
    assert (turn.text, turn.ending) == ("My order is #W1077442.", None)
    assert turn.reasoning == f"The task is nearly done, I could send {STOP} now."
    assert turn.candidates == ["My order is #W1077442."]
    ended = respond(human, CONVERSATION)
    assert (ended.text, ended.ending, ended.reasoning) == (STOP, "stop", f"Done? Not yet: no {STOP}.")


def test_role_breaks_and_structured_turns_are_read_from_the_visible_text_only():
    thinking_as_agent = "<think>How can I help you? As an AI I would say that.</think>Order #W1077442, please."
    turn = respond(
        HumanSimulator(ScriptedChatModel([thinking_as_agent]), INSTRUCTION, settings=HumanSettings()), CONVERSATION
    )
    assert (turn.text, turn.retries, turn.error) == ("Order #W1077442, please.", 0, None)
    structured = '<think>{"message": "x", "stop": true}</think>{"message": "It is #W1077442.", "stop": false}'
    model = ScriptedChatModel([structured])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings(structured=True)), CONVERSATION)
    assert (turn.text, turn.ending, turn.reasoning) == ("It is #W1077442.", None, '{"message": "x", "stop": true}')


def test_the_best_candidate_brings_its_own_thinking():
    candidates = ["<think>first</think>I forget.", "<think>second</think>It's order #W1077442."]
    judge = ScriptedChatModel(
        judge_by_candidate(
            {"I forget.": '{"critique": "no", "score": 1}', "#W1077442.": '{"critique": "yes", "score": 9}'}
        )
    )
    turn = respond(
        HumanSimulator(ScriptedChatModel(candidates), INSTRUCTION, judge=judge, settings=HumanSettings(best_of_n=2)),
        CONVERSATION,
    )
    assert (turn.text, turn.reasoning) == ("It's order #W1077442.", "second")
    assert all("<think>" not in (request.messages[-1].content or "") for request in judge.requests)


def test_the_human_never_sees_thinking():
    conversation = [
        POLICY,
        Message(role="user", content="Hi, cancel an order.", reasoning_content="My own plan."),
        Message(role="assistant", content="Which one?", reasoning_content="The agent's plan: ###STOP###"),
    ]
    model = ScriptedChatModel(["#W1077442."])
    respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings()), conversation)
    shown = model.requests[0].messages
    assert all(message.reasoning_content is None for message in shown)
    assert [message.content for message in shown[1:]] == [AGENT_GREETING, "Hi, cancel an order.", "Which one?"]


@pytest.mark.parametrize(
    ("reply", "ending"),
    [
        (TRANSFER, "transfer"),
        (f"Okay, thanks. {TRANSFER}", "transfer"),
        (OUT_OF_SCOPE, "out_of_scope"),
        (f"{OUT_OF_SCOPE} {STOP}", "out_of_scope"),  # the more telling marker wins
        (f"Thanks! {STOP}", "stop"),
        ("Thanks!", None),
    ],
)
def test_transfer_and_out_of_scope_end_the_chat(reply: str, ending: str | None):
    turn = respond(HumanSimulator(ScriptedChatModel([reply]), INSTRUCTION, settings=HumanSettings()), CONVERSATION)
    assert (turn.text, turn.ending) == (reply, ending)


def test_the_prompt_says_when_to_use_each_ending():
    for structured in (False, True):
        model = ScriptedChatModel(['{"message": "Hi.", "stop": false}'])
        respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings(structured=structured)), [POLICY])
        lines = (model.requests[0].messages[0].content or "").splitlines()
        assert "transfers you to a human agent" in next(line for line in lines if TRANSFER in line)
        assert "your task does not cover" in next(line for line in lines if OUT_OF_SCOPE in line)
    model = ScriptedChatModel(
        [f'{{"message": "{TRANSFER}", "stop": true}}', f'{{"message": "{OUT_OF_SCOPE}", "stop": false}}']
    )
    human = HumanSimulator(model, INSTRUCTION, settings=HumanSettings(structured=True))
    assert (respond(human, CONVERSATION).ending, respond(human, CONVERSATION).ending) == ("transfer", "out_of_scope")


def test_a_role_break_beside_an_ending_marker_is_still_a_role_break():
    model = ScriptedChatModel([f"How can I help you? {TRANSFER}", f"Alright. {TRANSFER}"])
    turn = respond(HumanSimulator(model, INSTRUCTION, settings=HumanSettings()), CONVERSATION)
    assert (turn.text, turn.ending, turn.retries) == (f"Alright. {TRANSFER}", "transfer", 1)


def test_settings_refuse_greedy_best_of_n_and_unknown_keys():
    with pytest.raises(ValidationError, match="temperature > 0"):
        HumanSettings(best_of_n=4, temperature=0.0)
    with pytest.raises(ValidationError):
        HumanSettings(best_of_n=0)
    with pytest.raises(ValidationError):
        HumanSettings(n=4)
    assert HumanSettings(temperature=0.0).best_of_n == 1


# --- revealed values --------------------------------------------------------------------------------


@pytest.mark.parametrize("instruction", example_instructions("retail") + example_instructions("airline"))
def test_saying_what_the_instruction_says_is_never_an_error(instruction: str):
    assert revealed_values(instruction, [instruction, instruction.upper(), instruction.replace("#W", "W")], []) == []


def test_invented_retail_values_are_human_errors():
    instruction = example_instructions("retail")[0]  # Christine King, #W1077442
    human = [
        "Hi, I'm Christine King, my email is christine.king7156@example.com.",
        "The order is #W1077442, and also #W9999999. My user id is christine_king_9954.",
        "My zip code is 10001 and I paid $123.45 with gift_card_5715854.",
        "Or maybe it was chris.king@example.com, the card ending in 4321.",
    ]
    errors = revealed_values(instruction, human, ["Your order total is $150.02."])
    said = [error.split("'")[1] for error in errors]
    assert said == [
        "#W9999999",
        "chris.king@example.com",
        "christine_king_9954",
        "gift_card_5715854",
        "4321",
        "123.45",
        "10001",
    ]
    assert errors[0] == (
        "the user said '#W9999999' (an order id), which is in neither the instruction nor the agent's replies"
    )


def test_values_the_agent_gave_are_known_in_any_spelling():
    instruction = example_instructions("retail")[8]  # Ignacio Camacho, zip 89165
    agent = [
        "Your pending orders are W2353436 and #W7342738, together 1,998.39 dollars.",
        "Your user id is ignacio_camacho_6802.",
    ]
    human = [
        "My zip is 89165.",
        "So #w2353436 and W7342738 come to $1998.39? Thanks, user IGNACIO_CAMACHO_6802 signing off.",
    ]
    assert revealed_values(instruction, human, agent) == []


def test_invented_airline_values_are_human_errors():
    instruction = example_instructions("airline")[3]  # susana_bennett_7696, APUPNH, Mastercard ending in 5603
    human = [
        "My user id is susana_bennett_7696 and the reservation is APUPNH.",
        "Please use the Mastercard ending in 5603.",
        "Actually my booking is XKCDQZ, the flight HAT123, and my card's last four digits are 9876.",
    ]
    said = [error.split("'")[1] for error in revealed_values(instruction, human, ["You fly on HAT001."])]
    assert said == ["HAT123", "XKCDQZ", "9876"]


def test_ordinary_words_and_numbers_are_not_values():
    instruction = example_instructions("airline")[0]
    human = ["THANKS a lot! I need 3 bags, the flight on May 24 at 10am, and PLEASE hurry; it's 2 people."]
    assert revealed_values(instruction, human, []) == []
