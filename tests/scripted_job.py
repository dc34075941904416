"""Scripted roles for run-driver tests (test doubles, never a backend of the main job), and a runnable job.

`oracle_agent` replays the ground truth the tests hand it one call per turn and then answers with the
expected outputs: it exists to make the driver's accepted/rejected/failed bookkeeping checkable, not to
produce data. `wrong_agent` cancels with the wrong reason (rejected by the state check); `broken_agent`
answers every request with an endpoint error (failed, attributed to the system). The human says the
instruction, then ###STOP### once the agent has replied in text.

Run as a script (the SIGKILL test does): `python tests/scripted_job.py OUT_DIR [--delay S] [--trials K]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from apigen_mt.pipeline.config import load_config
from apigen_mt.pipeline.run import RunOptions, run_trajectories
from apigen_mt.pipeline.scripted import ScriptedChatModel
from apigen_mt.pipeline.sources import load_source
from apigen_mt.simulators.chat import ChatRequest, ChatResponse
from apigen_mt.simulators.types import ToolCall

ROOT = Path(__file__).resolve().parents[1]
DEMO_BLUEPRINTS = ROOT / "examples" / "demo_blueprints.jsonl"
CONFIG = ROOT / "configs" / "local-cpu.yaml"
BLUEPRINTS = [json.loads(line) for line in DEMO_BLUEPRINTS.read_text().splitlines() if line.strip()]
WRONG = {"demo-retail-cancel-2"}  # the agent gets these wrong
BROKEN = {"demo-retail-cancel-3"}  # the agent's endpoint fails on these


def _blueprint_of(request: ChatRequest) -> dict | None:
    for message in request.messages:
        for blueprint in BLUEPRINTS:
            if message.content and blueprint["instruction"] in message.content:
                return blueprint
    return None


def scripted_agent(request: ChatRequest):
    blueprint = _blueprint_of(request)
    if blueprint is None:
        return "How can I help you?"
    if blueprint["id"] in BROKEN:
        return ChatResponse(model="scripted-agent", error="HTTP 503: the scripted endpoint is down")
    done = sum(1 for message in request.messages if message.role == "tool")
    actions = blueprint["actions"]
    if done < len(actions):
        action = dict(actions[done])
        if blueprint["id"] in WRONG and action["name"] == "cancel_pending_order":
            action["arguments"] = {**action["arguments"], "reason": "no longer needed"}
        return ToolCall.model_validate(action)
    return "All done. " + " ".join(blueprint["outputs"])


def scripted_human(request: ChatRequest):
    blueprint = _blueprint_of(request)
    assert blueprint is not None, "the human's prompt must contain the blueprint's instruction"
    said = sum(1 for message in request.messages if message.role == "assistant")
    return blueprint["instruction"] if said == 0 else "Thanks, that is all. ###STOP###"


class DelayedScripted(ScriptedChatModel):
    """A scripted double that takes `delay` seconds per request, so a test can kill a run halfway."""

    def __init__(self, script, model_id: str, delay: float) -> None:
        super().__init__(script, model_id=model_id)
        self.delay = delay

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(self.delay)
        return await super().chat(request)


def factory(delay: float = 0.0):
    def make(name: str):
        # local-cpu.yaml has one model for every role: tell the roles apart by what they are asked.
        def script(request: ChatRequest):
            return scripted_agent(request) if request.tools else scripted_human(request)

        return DelayedScripted(script, model_id=f"scripted-{name}", delay=delay)

    return make


def run(
    out: Path, *, trials: int = 2, delay: float = 0.0, force: bool = False, progress: bool = False, rows_per_shard: int = 64
):
    config = load_config(CONFIG)
    # The scripted human answers in plain text, not in the structured form the embedded model is asked for.
    phase = config.trajectories
    human = phase.human.model_copy(update={"structured": False})
    phase = phase.model_copy(update={"human": human, "rows_per_shard": rows_per_shard})
    config = config.model_copy(update={"trajectories": phase})
    source = load_source("retail", DEMO_BLUEPRINTS)
    options = RunOptions(output=out, trials=trials, force=force, progress=progress)
    return run_trajectories(config, [source], options, model_factory=factory(delay))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--rows-per-shard", type=int, default=64)
    args = parser.parse_args()
    summary = run(args.out, trials=args.trials, delay=args.delay, rows_per_shard=args.rows_per_shard)
    print(json.dumps(summary.counts), file=sys.stdout)
