"""Stage 2, the review committee: K LLM reviewers score a blueprint on four criteria; majority vote per criterion.

    verdict = await review(models, blueprint, diff_patch, policy_excerpt, ReviewSettings(reviewers=3))
    verdict.passed, verdict.score, verdict.votes, verdict.as_verdict()

Each reviewer sees the policy excerpt, the task and its `diff_patch`, writes a short reflection and scores
correctness, completeness, satisfaction and creativity 0 or 1. The K reviewers take the given models in
turn (reviewer i asks `models[i % len(models)]`), so one model can fill a whole committee of samples.

Votes: a criterion is met when more than half of the readable reviews give it 1, so a tie (an even
committee, or one shrunk by a reviewer's error) counts as not met: a criterion half the committee doubts
is not established. The score is the average of the four voted decisions, and the blueprint passes when
it reaches `threshold` (stage 3). A reviewer whose backend fails or whose reply cannot be read is left
out of the vote and recorded; when no reviewer can be read the committee has no verdict (`score` None).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apigen_mt.blueprints.prompts import review_messages
from apigen_mt.simulators.chat import ChatModel, ChatRequest, ChatResponse, SamplingParams
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.types import Blueprint, Verdict
from apigen_mt.simulators.xlam import text_field_limit

STAGE = "review"

CRITERIA = ("correctness", "completeness", "satisfaction", "creativity")

# A grammar must close the JSON within max_tokens: the reflection is capped (about three characters a token,
# `text_field_limit`) so that the scores still fit after it; at most this many characters at any budget.
REFLECTION_MAX_CHARS = 1200


def review_schema(max_tokens: int) -> dict[str, Any]:
    """A review under a JSON schema whose reflection a reply of `max_tokens` tokens can close."""
    reflection_chars = min(REFLECTION_MAX_CHARS, text_field_limit(max_tokens) - 64)  # the scores' ~30 tokens
    return {
        "type": "object",
        "properties": {  # reflection first: the reviewer reasons before it scores
            "reflection": {"type": "string", "maxLength": max(16, reflection_chars)},
            **{criterion: {"type": "integer", "enum": [0, 1]} for criterion in CRITERIA},
        },
        "required": ["reflection", *CRITERIA],
        "additionalProperties": False,
    }


class ReviewSettings(BaseModel):
    """The committee's size, its pass mark, and how each reviewer is sampled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reviewers: int = Field(3, ge=1, le=100, description="K, the number of reviews per blueprint, each a request")
    threshold: float = Field(0.75, ge=0, le=1, description="the voted average a blueprint must reach")
    # The paper accepts on the average alone; a task whose actions do not implement its instruction is wrong
    # data whatever its other scores, so correctness must also win its own majority by default.
    required: tuple[str, ...] = Field(("correctness",), description="criteria the majority must pass regardless")

    @field_validator("required")
    @classmethod
    def _known_criteria(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in CRITERIA]
        if unknown:
            raise ValueError(f"unknown review criteria {', '.join(unknown)}; choose from {', '.join(CRITERIA)}")
        return value

    # Above 0 so that one model asked K times gives K independent reviews.
    temperature: float = Field(0.7, ge=0, description="sampling temperature of each review")
    max_tokens: int = Field(
        512, ge=1, le=2**24, description="tokens one review (reflection included) may use (2^24 is above any context)"
    )


DEFAULT_SETTINGS = ReviewSettings()


class Review(BaseModel):
    """One reviewer's reflection and its 0/1 score for every criterion."""

    reflection: str
    scores: dict[str, int]


class Ballot(BaseModel):
    """What one reviewer returned: a review, or the error that kept it out of the vote."""

    model_id: str
    review: Review | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CommitteeVerdict(BaseModel):
    """The committee's decision: per-criterion majority, their average, and whether it reaches the threshold."""

    ballots: list[Ballot]
    decision: dict[str, int]  # voted 0 or 1 per criterion; empty when no review could be read
    score: float | None
    threshold: float
    required: tuple[str, ...] = ()
    passed: bool

    @property
    def errors(self) -> list[str]:
        return [f"reviewer {index} ({ballot.model_id}): {ballot.error}" for index, ballot in self._failed()]

    @property
    def votes(self) -> dict[str, Any]:
        """The `votes` column: every ballot, the decision, the score and the threshold, as plain JSON."""
        ballots: list[dict[str, Any]] = []
        for ballot in self.ballots:
            entry: dict[str, Any] = {"model": ballot.model_id}
            if ballot.review is not None:
                entry.update(scores=dict(ballot.review.scores), reflection=ballot.review.reflection)
            else:
                entry["error"] = ballot.error
            ballots.append(entry)
        return {"ballots": ballots, "decision": dict(self.decision), "score": self.score, "threshold": self.threshold}

    def as_verdict(self) -> Verdict:
        """The stage-2/3 outcome as a `Verdict`; a failing one gives each reviewer's objections as reasons."""
        reasons = [] if self.passed else self._reasons()
        return Verdict(
            stage=STAGE, passed=self.passed, reasons=reasons, details={"score": self.score, "votes": self.votes}
        )

    def _failed(self) -> list[tuple[int, Ballot]]:
        return [(index, ballot) for index, ballot in enumerate(self.ballots, start=1) if ballot.review is None]

    def _reasons(self) -> list[str]:
        if self.score is None:
            return ["no reviewer gave a readable review", *self.errors]
        failing = [criterion for criterion in CRITERIA if not self.decision[criterion]]
        missed = [criterion for criterion in self.required if criterion in failing]
        if self.score >= self.threshold:
            summary = f"the committee voted 0 on {', '.join(missed)}, which every task must pass"
        else:
            summary = (
                f"the review score {self.score:.2f} is below the threshold {self.threshold:.2f}; "
                f"the committee voted 0 on {', '.join(failing)}"
            )
        reasons = [summary]
        for index, ballot in enumerate(self.ballots, start=1):
            if ballot.review is None:
                continue
            zeros = [criterion for criterion in CRITERIA if not ballot.review.scores[criterion]]
            judged = f"voted 0 on {', '.join(zeros)}" if zeros else "voted 1 on every criterion"
            reasons.append(f"reviewer {index} ({ballot.model_id}) {judged}: {ballot.review.reflection.strip()}")
        return reasons


def review_request(
    blueprint: Blueprint,
    diff_patch: JSON,
    policy_excerpt: str,
    settings: ReviewSettings = DEFAULT_SETTINGS,
    *,
    refusal: bool = False,
    records: dict[str, Any] | None = None,
) -> ChatRequest:
    """One reviewer's request; `refusal` tells the reviewer that the task is meant to be declined, `records` are the
    records the task's calls touch."""
    return ChatRequest(
        messages=review_messages(blueprint, diff_patch, policy_excerpt, refusal=refusal, records=records),
        json_schema=review_schema(settings.max_tokens),
        sampling=SamplingParams(temperature=settings.temperature, max_tokens=settings.max_tokens),
    )


_SCORES_TAG = re.compile(r"<scores>(.*?)</scores>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_review(text: str) -> Review | None:
    """A review from a reply under `review_schema`, or from a `<scores>` section or fenced JSON block in free
    text; None unless every criterion is scored 0 or 1 (a missing reflection reads as empty)."""
    candidates = [text.strip()]
    for pattern in (_SCORES_TAG, _FENCE):
        found = pattern.findall(text)
        if found:
            candidates.append(found[-1].strip())  # a reviewer that reasons first states its scores last
    for candidate in candidates:
        try:
            decoded = loads_strict(candidate, "the review")
        except StrictJSONError:
            continue
        if isinstance(decoded, dict):
            return _review_of(decoded)
    return None


def _review_of(decoded: dict[str, Any]) -> Review | None:
    reflection = decoded.get("reflection", "")
    if not isinstance(reflection, str):
        return None
    scores = {criterion: decoded.get(criterion) for criterion in CRITERIA}
    if any(isinstance(score, bool) or score not in (0, 1) for score in scores.values()):
        return None
    return Review(reflection=reflection, scores={criterion: int(score) for criterion, score in scores.items()})


async def review(
    models: Sequence[ChatModel],
    blueprint: Blueprint,
    diff_patch: JSON,
    policy_excerpt: str,
    settings: ReviewSettings,
    *,
    refusal: bool = False,
    records: dict[str, Any] | None = None,
) -> CommitteeVerdict:
    """K reviews in parallel, round-robin over `models`, and their vote. A dead engine (`ModelUnavailable`)
    propagates; any other failure of a reviewer is recorded on its ballot."""
    if not models:
        raise ValueError("the review committee needs at least one reviewer model")
    request = review_request(blueprint, diff_patch, policy_excerpt, settings, refusal=refusal, records=records)
    chosen = [models[index % len(models)] for index in range(settings.reviewers)]
    responses = await asyncio.gather(*(model.chat(request) for model in chosen))
    ballots = [_ballot(model, response) for model, response in zip(chosen, responses)]
    return committee_verdict(ballots, settings.threshold, settings.required)


def _ballot(model: ChatModel, response: ChatResponse) -> Ballot:
    ballot = Ballot(model_id=response.model or model.model_id)
    if not response.ok:
        ballot.error = response.error or "the reviewer's backend answered without a completion"
        return ballot
    completion = response.completions[0]
    ballot.prompt_tokens, ballot.completion_tokens = completion.prompt_tokens, completion.completion_tokens
    if completion.error is not None:
        ballot.error = f"the backend ended the reply abnormally: {completion.error}"
        return ballot
    ballot.review = parse_review(completion.text)
    if ballot.review is None:
        cut = " (cut off at max_tokens)" if completion.finish_reason == "length" else ""
        ballot.error = (
            f"the reply is not a review with 0/1 scores for {', '.join(CRITERIA)}{cut}: {completion.text[:200]!r}"
        )
    return ballot


def committee_verdict(ballots: list[Ballot], threshold: float, required: tuple[str, ...] = ()) -> CommitteeVerdict:
    """The majority vote of the readable ballots (a tie is 0), the average of the decisions, pass or fail: pass
    when the average reaches `threshold` and every `required` criterion won its majority."""
    reviews = [ballot.review for ballot in ballots if ballot.review is not None]
    if not reviews:
        return CommitteeVerdict(
            ballots=ballots, decision={}, score=None, threshold=threshold, required=required, passed=False
        )
    decision = {
        criterion: int(2 * sum(review.scores[criterion] for review in reviews) > len(reviews)) for criterion in CRITERIA
    }
    score = sum(decision.values()) / len(CRITERIA)
    passed = score >= threshold and all(decision[criterion] for criterion in required)
    return CommitteeVerdict(
        ballots=ballots, decision=decision, score=score, threshold=threshold, required=required, passed=passed
    )
