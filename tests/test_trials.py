"""One trial's wiring with scripted doubles: what reaches the human and the agent, and what the row records."""

from __future__ import annotations

import asyncio

from apigen_mt.blueprints.personas import load_personas, persona_of
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel, ServerReply
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, TrialSettings, play_trial
from apigen_mt.simulators.agent import AgentSettings
from apigen_mt.simulators.chat import ChatRequest
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.episode import EpisodeSettings
from apigen_mt.simulators.human import HumanSettings
from apigen_mt.simulators.types import Blueprint, Provenance, ToolCall

RETAIL = get_domain("retail")
DB = RETAIL.load()
FIND = ToolCall(name="find_user_id_by_email", arguments={"email": "tao.grimes1013@example.com"})
ORDER = ToolCall(name="get_order_details", arguments={"order_id": "#W9457132"})
INSTRUCTION = "You are Tao Grimes, email tao.grimes1013@example.com. Ask for the status of order #W9457132."


def blueprint(context_ids: list[str]) -> Blueprint:
    return Blueprint(
        id="bp-status",
        user_id="tao_grimes_9935",
        instruction=INSTRUCTION,
        actions=[FIND, ORDER],
        provenance=Provenance(context_ids=context_ids),
    )


def play(item: TrialItem, agent_script, settings: TrialSettings) -> tuple[dict, list[ChatRequest], list[ChatRequest]]:
    agent = ScriptedChatModel(agent_script, model_id="scripted-agent")
    human = ScriptedChatModel([INSTRUCTION, "Thanks ###STOP###"], model_id="scripted-human")
    models = TrialModels(agent=agent, human=human, judge=ScriptedChatModel([], model_id="scripted-judge"))
    row = asyncio.run(play_trial(RETAIL, DB, RETAIL.policy, item, models, settings))
    return row, agent.requests, human.requests


SETTINGS = TrialSettings(
    agent=AgentSettings(temperature=0.0, later_trial_temperature=0.8),
    human=HumanSettings(max_retries=0),
    episode=EpisodeSettings(max_turns=4),
)


def test_the_phase_1_persona_reaches_the_phase_2_human():
    pool = load_personas()
    row, _, human_requests = play(
        TrialItem(blueprint(["user:tao_grimes_9935", "persona:3"]), 0, None), [FIND, ORDER, "Pending."], SETTINGS
    )
    assert persona_of(blueprint(["persona:3"])) == pool[3]
    assert pool[3].strip() in human_requests[0].messages[0].content
    assert row["status"] in ("accepted", "rejected")
    # Blueprints from files carry no persona; an index outside the pool is none either.
    assert persona_of(blueprint([])) is None and persona_of(blueprint([f"persona:{len(pool)}"])) is None
    _, _, plain = play(TrialItem(blueprint([]), 0, None), [FIND, ORDER, "Pending."], SETTINGS)
    assert "# Your persona" not in plain[0].messages[0].content


def test_later_trials_sample_the_agent_at_their_own_temperature():
    _, first, _ = play(TrialItem(blueprint([]), 0, None), [FIND, ORDER, "Pending."], SETTINGS)
    _, second, _ = play(TrialItem(blueprint([]), 1, None), [FIND, ORDER, "Pending."], SETTINGS)
    assert {request.sampling.temperature for request in first} == {0.0}
    assert {request.sampling.temperature for request in second} == {0.8}


def test_the_row_records_what_the_episode_repaired():
    beside = ServerReply(content="Let me look that up.", calls=(FIND, ORDER))
    row, _, _ = play(TrialItem(blueprint([]), 0, None), [beside, ORDER, "Pending."], SETTINGS)
    assert len(row["repairs"]) == 2
    assert any("after the first" in repair for repair in row["repairs"])
    assert any("text" in repair for repair in row["repairs"])
    clean, _, _ = play(TrialItem(blueprint([]), 0, None), [FIND, ORDER, "Pending."], SETTINGS)
    assert clean["repairs"] == [] and clean["warnings"] == []


def test_the_row_keeps_the_verifiers_warnings():
    # A cancellation the tool refused for its reason, then made right: R8 warns, nothing rejects.
    cancel = Blueprint(
        id="bp-cancel",
        user_id="tao_grimes_9935",
        instruction=INSTRUCTION.replace("Ask for the status of", "Cancel") + " Ordered by mistake.",
        actions=[
            FIND,
            ORDER,
            ToolCall(name="cancel_pending_order", arguments={"order_id": "#W9457132", "reason": "ordered by mistake"}),
        ],
    )
    wrong = ToolCall(name="cancel_pending_order", arguments={"order_id": "#W9457132", "reason": "changed my mind"})
    longer = SETTINGS.model_copy(update={"episode": EpisodeSettings(max_turns=8)})
    row, _, _ = play(TrialItem(cancel, 0, None), [FIND, ORDER, wrong, cancel.actions[2], "It is cancelled."], longer)
    assert row["status"] == "accepted", row["reasons"]
    assert [text for text in row["warnings"] if text.startswith("[R8]")], row["warnings"]


def test_a_rerun_plays_system_failures_again_with_the_next_attempt_until_the_bound():
    from apigen_mt.pipeline.run.phase2 import plan_trials
    from apigen_mt.pipeline.run.sources import LoadedSource
    from apigen_mt.pipeline.store.run_folder import StoredTrial

    source = LoadedSource(RETAIL, None, DB, RETAIL.policy, [blueprint([])], ground_truth={"bp-status": "digest"})
    stored = {
        ("bp-status", 0): StoredTrial(attempt=1, failed_by_system=False, system_failures=0),
        ("bp-status", 1): StoredTrial(attempt=2, failed_by_system=True, system_failures=2),
        ("bp-status", 2): StoredTrial(attempt=4, failed_by_system=True, system_failures=3),
        ("bp-status", 3): StoredTrial(attempt=5, failed_by_system=True, system_failures=4),
    }
    plan = plan_trials({"s0": source}, 5, stored, max_replays=3)
    assert [(key, item.trial, item.earlier_attempts) for key, item in plan.items] == [
        ("s0", 1, 2),
        ("s0", 2, 4),
        ("s0", 4, 0),
    ]
    assert (plan.skipped, plan.replayed, plan.left_failed) == (2, 2, 1)
    assert plan_trials({"s0": source}, 5, stored, max_replays=0).left_failed == 3
    # The replay's row counts on from the attempts before it.
    row, _, _ = play(TrialItem(blueprint([]), 1, None, earlier_attempts=2), ["I cannot help."], SETTINGS)
    assert row["attempt"] == 3
