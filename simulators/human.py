"""The simulated human: an LLM that plays the customer of a blueprint's instruction (or of a tau2 task's scenario),
one message a turn.

    human = HumanSimulator(model, blueprint.instruction, judge=judge, settings=HumanSettings(best_of_n=4))
    # a tau2 task's human: scenario=blueprint.scenario, given part by part (what it wants, knows, does not know)
    turn = await human.respond(episode_messages)   # the conversation as the agent sees it
    turn.text, turn.ending                         # the next user message; "stop" when it holds ###STOP###

Everything is read from the visible text only: thinking (`Completion.reasoning`) is kept apart in
`HumanTurn.reasoning`, so an end marker written only while thinking never ends the chat.

Best-of-N, as APIGen-MT does it: one request samples `best_of_n` candidates, the judge role scores each
usable one from 0 to 10 against the instruction, and the best is kept. The simulator causes many failed
episodes, so it is guarded: a request whose candidates are all empty or break the role (see
`turn_problem`) is sent again, at most `max_retries` times. What a human says is checked afterwards:
`revealed_values` finds values it could not have known; an early ###STOP### is judged by the trajectory
verifier, which sees the blueprint (`apigen_mt.validators.trajectory`).
A dead engine (`ModelUnavailable`) propagates from either model unchanged.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from apigen_mt.simulators.chat import ChatModel, ChatRequest, ChatResponse, Completion, SamplingParams
from apigen_mt.simulators.human_prompts import (
    JUDGE_MAX_TOKENS,
    JUDGE_SCHEMA,
    STOP,
    HumanEnding,
    decode_structured_turn,
    ending_of,
    human_system_prompt,
    human_turn_schema,
    human_view,
    judge_messages,
    parse_score,
    without_markers,
)
from apigen_mt.simulators.types import Message, Scenario
from apigen_mt.simulators.xlam import text_field_limit


class HumanSettings(BaseModel):
    """How the human model (and its judge) are asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    best_of_n: int = Field(
        1,
        ge=1,
        le=100,
        description="candidates sampled per turn, each a reply the judge reads; above 1 it keeps the best",
    )
    structured: bool = Field(
        False, description='generate each turn as {"message": str, "stop": bool} under a JSON schema (for weak models)'
    )
    max_retries: int = Field(
        2, ge=0, le=100, description="requests sent again when every candidate is empty or breaks the role"
    )
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the human's turns")
    max_tokens: int = Field(
        256, ge=1, le=2**24, description="tokens one human message may use (2^24 is above any context)"
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="sampling seed (32 bits; a retry adds its number); None leaves it unseeded",
    )

    @model_validator(mode="after")
    def _candidates_can_differ(self) -> HumanSettings:
        if self.best_of_n > 1 and self.temperature == 0:
            raise ValueError("best_of_n > 1 needs temperature > 0; greedy sampling gives N identical candidates")
        return self


class HumanTurn(BaseModel):
    """One human message, or the error that kept it from coming.

    `candidates` and `scores` belong to the last request (a score is None for an unusable or unscored
    candidate); `judge_error` is a judge failure that left the choice to candidate order. Tokens count
    every request made for this turn, the retries' and the judge's included. `ending` names the end marker
    of a message that ends the chat; `reasoning` is the chosen message's thinking, never part of `text`.
    """

    text: str = ""
    ending: HumanEnding | None = None
    reasoning: str | None = None
    candidates: list[str] = Field(default_factory=list)
    scores: list[float | None] = Field(default_factory=list)
    retries: int = 0
    error: str | None = None
    unusable: bool = False  # the error is the human model's own bad turns, not its backend's failure
    judge_error: str | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model_id: str = ""


@dataclass(frozen=True)
class _Candidate:
    text: str  # as it would be stored: plain visible text, ###STOP### appended for a structured stop
    ending: HumanEnding | None
    problem: str | None
    reasoning: str | None = None


class HumanSimulator:
    """The human role over any `ChatModel`; `judge` (the human_judge role) defaults to the human's model."""

    def __init__(
        self,
        model: ChatModel,
        instruction: str,
        *,
        persona: str | None = None,
        judge: ChatModel | None = None,
        settings: HumanSettings,
        scenario: Scenario | None = None,
    ) -> None:
        self.model = model
        self.instruction = instruction
        self.judge = judge or model
        self.settings = settings
        self.system_prompt = human_system_prompt(
            instruction, persona, structured=settings.structured, scenario=scenario
        )

    def __repr__(self) -> str:
        return f"HumanSimulator({self.model!r}, judge={self.judge!r}, {self.settings!r})"

    async def respond(self, conversation: Sequence[Message]) -> HumanTurn:
        """The human's next message after `conversation` (the episode's messages as the agent sees them)."""
        started = time.perf_counter()
        dialogue = human_view(conversation)
        messages = [Message(role="system", content=self.system_prompt), *dialogue]
        turn = HumanTurn(model_id=self.model.model_id)
        unusable = 0
        for attempt in range(self.settings.max_retries + 1):
            turn.retries = attempt
            response = await self.model.chat(self._request(messages, attempt))
            turn.model_id = response.model or turn.model_id
            if not response.ok:
                turn.error = response.error or "the human model's backend answered without a completion"
                turn.unusable = False
                turn.candidates, turn.scores = [], []
                continue
            _count(turn, response.completions)
            candidates = [self._read(completion) for completion in response.completions]
            turn.candidates = [candidate.text for candidate in candidates]
            usable = [index for index, candidate in enumerate(candidates) if candidate.problem is None]
            if not usable:
                unusable += len(candidates)
                last_problem = candidates[-1].problem
                turn.error = (
                    f"the human model gave {unusable} empty, role-breaking or malformed turns "
                    f"in {attempt + 1} request(s); the last: {last_problem}"
                )
                turn.unusable = True
                continue
            turn.scores = await self._score(turn, dialogue, candidates, usable)
            chosen = candidates[_best(turn.scores, usable)]
            turn.text, turn.ending, turn.reasoning = chosen.text, chosen.ending, chosen.reasoning
            turn.error, turn.unusable = None, False
            break
        turn.latency_s = time.perf_counter() - started
        return turn

    def _request(self, messages: list[Message], attempt: int) -> ChatRequest:
        seed = None if self.settings.seed is None else self.settings.seed + attempt  # a retry must not repeat itself
        sampling = SamplingParams(
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            n=self.settings.best_of_n,
            seed=seed,
        )
        schema = human_turn_schema(text_field_limit(self.settings.max_tokens)) if self.settings.structured else None
        return ChatRequest(messages=messages, json_schema=schema, sampling=sampling)

    def _read(self, completion: Completion) -> _Candidate:
        """One candidate, read from the completion's visible text (its thinking is already apart)."""
        if completion.error is not None:
            problem = f"the backend ended it abnormally: {completion.error}"
            return _Candidate(completion.text, None, problem, completion.reasoning)
        if self.settings.structured:
            decoded = decode_structured_turn(completion.text)
            if decoded is None:
                problem = 'it is not the JSON object {"message": str, "stop": bool}'
                return _Candidate(completion.text, None, problem, completion.reasoning)
            text, stopped = decoded[0].strip(), decoded[1]
            ending = ending_of(text)
            if ending is None and stopped:
                ending, text = "stop", f"{text} {STOP}".strip()
        else:
            text = completion.text.strip()
            ending = ending_of(text)
        said = without_markers(text)
        # An end marker on its own is a complete message; anything said beside it must still be in role.
        problem = turn_problem(said) if said or ending is None else None
        return _Candidate(text, ending, problem, completion.reasoning)

    async def _score(
        self, turn: HumanTurn, dialogue: list[Message], candidates: list[_Candidate], usable: list[int]
    ) -> list[float | None]:
        """The judge's 0-10 score of each usable candidate; the judge is asked only when there is a choice."""
        scores: list[float | None] = [None] * len(candidates)
        if len(usable) == 1:
            return scores
        sampling = SamplingParams(temperature=0.0, max_tokens=JUDGE_MAX_TOKENS)
        requests = [
            ChatRequest(
                messages=judge_messages(self.instruction, dialogue, candidates[index].text),
                json_schema=JUDGE_SCHEMA,
                sampling=sampling,
            )
            for index in usable
        ]
        responses: list[ChatResponse] = await asyncio.gather(*(self.judge.chat(request) for request in requests))
        for index, response in zip(usable, responses):
            if not response.ok:
                turn.judge_error = turn.judge_error or (response.error or "the judge answered without a completion")
                continue
            _count(turn, response.completions[:1])
            scores[index] = parse_score(response.completions[0].text)
        return scores


def _count(turn: HumanTurn, completions: Sequence[Completion]) -> None:
    """Add one response's tokens; its `n` completions share one prompt, which each of them reports."""
    turn.prompt_tokens += completions[0].prompt_tokens
    turn.cached_prompt_tokens += completions[0].cached_prompt_tokens
    turn.completion_tokens += sum(completion.completion_tokens for completion in completions)


def _best(scores: Sequence[float | None], usable: Sequence[int]) -> int:
    """The top-scored usable candidate, the first of equals; the first usable one when none has a score."""
    scored = [index for index in usable if scores[index] is not None]
    if not scored:
        return usable[0]
    return max(scored, key=lambda index: scores[index])  # max keeps the first of equal keys


# --- guards on single turns -------------------------------------------------------------------------

# A customer never says these; each one means the model slipped into the agent's part. Matched
# case-insensitively; ordinary customer phrasing ("can you help me", "I am a teacher") stays clear.
_ROLE_BREAKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
    for reason, pattern in (
        ("it offers help as the agent would", r"\b(?:how|what) (?:can|may|could) I (?:help|assist|do for you)\b"),
        ("it offers help as the agent would", r"\banything else I can (?:help|assist|do for you)\b"),
        ("it claims to be an AI", r"\bas an AI\b|\bI(?:'m| am) (?:an? )?(?:AI|language model)\b"),
        ("it claims to be the assistant", r"\bI(?:'m| am) (?:an?|your|the) (?:virtual |AI |digital )?assistant\b"),
        ("it claims to be the agent", r"\bI(?:'m| am) (?:an?|your|the) customer (?:service|support) (?:agent|rep)"),
        ("it writes a tool call", r'<tool_call>|\[\s*\{\s*"name"\s*:|"(?:arguments|kwargs)"\s*:'),
        ("it writes the agent's part", r"^\s*(?:agent|assistant|representative|customer service)\s*:"),
    )
)


def turn_problem(text: str) -> str | None:
    """Why `text` cannot be the human's message: empty, or out of role (see `_ROLE_BREAKS`); None if fine."""
    if not text.strip():
        return "the message is empty"
    for reason, pattern in _ROLE_BREAKS:
        if pattern.search(text):
            return reason
    return None


# --- checks on a finished conversation --------------------------------------------------------------


@dataclass(frozen=True)
class _ValueKind:
    """A kind of identifying value: how the human says it, what counts as the same value elsewhere."""

    label: str
    said: re.Pattern[str]  # in the human's messages; the first matched group is the value, else the match
    seen: re.Pattern[str]  # in the instruction and the agent's replies; looser, so that a match is generous
    canonical: Callable[[str], str]


def _amount(text: str) -> str:
    return format(Decimal(text.replace(",", "")).normalize(), "f")


_DIGITS = re.compile(r"(?<!\d)\d+(?!\d)")
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)")
_CODE = re.compile(r"\b[A-Za-z\d]{6}\b")

# Chosen from the example tasks of both domains and tau-bench's: order ids (#W1077442), emails, user and
# payment-method ids (christine_king_9954, gift_card_5715854), reservation ids and flight numbers
# (B3J93A, HAT001; six capitals and digits, case-sensitive so that ordinary words stay clear; an
# all-letter id such as APUPNH counts only right after "reservation" or "booking"), card endings
# ("ending in 6740"), zip codes and longer numbers (item ids, tracking numbers), and dollar amounts.
_ORDER_ID = re.compile(r"(?<!\w)#?W\d{7}\b", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ID = re.compile(r"\b[a-z]+(?:_[a-z]+)*_\d{4,}\b", re.IGNORECASE)
_VALUE_KINDS = (
    _ValueKind("an order id", _ORDER_ID, _ORDER_ID, lambda value: value.upper().lstrip("#")),
    _ValueKind("an email", _EMAIL, _EMAIL, str.lower),
    _ValueKind("an id", _ID, _ID, str.lower),
    _ValueKind("a code", re.compile(r"\b(?=[A-Z\d]*\d)(?=[A-Z\d]*[A-Z])[A-Z\d]{6}\b"), _CODE, str.upper),
    _ValueKind(
        "a code", re.compile(r"(?i:reservation|booking)(?: (?i:id|number|code|is))*:? ([A-Z]{6})\b"), _CODE, str.upper
    ),
    _ValueKind(
        "card digits",
        re.compile(r"(?:ending|ends) (?:in|with) (\d{4})\b|last (?:four|4)(?: digits)?(?: are| is)?:? (\d{4})\b", re.I),
        _DIGITS,
        str,
    ),
    _ValueKind(
        "an amount",
        re.compile(r"\$ ?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)|(\d+(?:\.\d+)?) ?(?:dollars|USD)\b", re.I),
        _NUMBER,
        _amount,
    ),
    # A number that is an amount ($ before or "dollars" after it) is left to the kind above.
    _ValueKind("a number", re.compile(r"(?<![\w$.,])\d{5,}(?!\w|[.,]\d| ?(?i:dollars|usd)\b)"), _DIGITS, str),
)


def _value_of(match: re.Match[str]) -> str:
    return next((group for group in match.groups() if group is not None), match.group())


def revealed_values(instruction: str, human_texts: Sequence[str], agent_texts: Sequence[str]) -> list[str]:
    """Human errors: identifying values the human said that neither the instruction nor the agent's replies
    contain, so the human can only have made them up (it sees nothing else), one error per value.

    A value derived by the human (a sum of two prices the agent named) is reported too; such turns are rare.
    """
    known = "\n".join([instruction, *agent_texts])
    errors: list[str] = []
    reported: set[tuple[str, str]] = set()
    for kind in _VALUE_KINDS:
        seen = {kind.canonical(_value_of(match)) for match in kind.seen.finditer(known)}
        for text in human_texts:
            for match in kind.said.finditer(text):
                value = _value_of(match)
                key = (kind.label, kind.canonical(value))
                if key[1] in seen or key in reported:
                    continue
                reported.add(key)
                where = "in neither the instruction nor the agent's replies"
                errors.append(f"the user said {value!r} ({kind.label}), which is {where}")
    return errors
