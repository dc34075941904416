"""Scripted roles for run-driver tests (test doubles, never a backend of the main job), and a runnable job.

`scripted_agent` replays each blueprint's ground truth one call per turn and then answers with the
expected outputs: it exists to make the driver's accepted/rejected/failed bookkeeping checkable, not to
produce data. On the blueprints in `WRONG` it cancels with the wrong reason (rejected by the state check);
on those in `BROKEN` every request gets an endpoint error (failed, attributed to the system).
`faulty_agent` also misbehaves the ways an engine can: garbage output, a timed-out request, an exception.
The human says the instruction, then ###STOP### once the agent has replied in text. `engine_factory` serves
the roles from Ray actors, as vLLM replicas are served, so that a test can kill an "engine" process.

Run as a script (the SIGKILL tests do): `python tests/scripted_job.py OUT_DIR [--delay S] [--trials K] [--in-flight N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from apigen_mt.pipeline.config import load_config
from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel
from apigen_mt.pipeline.engines.vllm_backend import VllmChatModel
from apigen_mt.pipeline.run.driver import RunOptions, run_trajectories
from apigen_mt.pipeline.run.sources import load_source
from apigen_mt.pipeline.store.run_folder import RunFolder
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


GARBAGE = "demo-retail-cancel-1"  # faulty_agent's engine writes noise for these
TIMED_OUT = "demo-retail-status-1"  # ... answers that the request timed out
RAISING = "demo-retail-status-2"  # ... raises


def faulty_agent(request: ChatRequest):
    blueprint = _blueprint_of(request)
    if blueprint is not None and blueprint["id"] == GARBAGE:
        return RawText('[{ "name": [[ <|im_end|>')
    if blueprint is not None and blueprint["id"] == TIMED_OUT:
        # How both backends answer a request that ran out of time (the request alone fails).
        return ChatResponse(
            model="scripted-agent", error="no answer within request_timeout_s=600s; the request was aborted"
        )
    if blueprint is not None and blueprint["id"] == RAISING:
        raise RuntimeError("the scripted engine crashed on this request")
    return scripted_agent(request)


class DelayedScripted(ScriptedChatModel):
    """A scripted double that takes `delay` seconds per request, so a test can kill a run halfway. It keeps
    no log of requests: a soak of thousands of episodes would hold every prompt."""

    def __init__(self, script, model_id: str, delay: float) -> None:
        super().__init__(script, model_id=model_id)
        self.delay = delay

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(self.delay)
        response = await super().chat(request)
        self.requests.clear()
        return response


def factory(delay: float = 0.0, agent=scripted_agent):
    def make(name: str):
        # local-cpu.yaml has one model for every role: tell the roles apart by what they are asked.
        def script(request: ChatRequest):
            return agent(request) if request.tools else scripted_human(request)

        return DelayedScripted(script, model_id=f"scripted-{name}", delay=delay)

    return make


class ScriptedEngine:
    """The scripted roles in a Ray actor with the methods `VllmChatModel` calls on a vLLM engine actor."""

    def __init__(self, delay: float) -> None:
        self.model = factory(delay)("engine")

    def info(self) -> dict:
        return {"model_id": self.model.model_id, "pid": os.getpid()}

    async def chat(self, request: ChatRequest, extra_sampling: dict | None = None) -> ChatResponse:
        return await self.model.chat(request)


def engine_factory(delay: float, max_restarts: int, started: list):
    """Models served by `ScriptedEngine` actors (Ray restarts one up to `max_restarts` times); each actor is
    appended to `started`, for the test to kill when it is done (the run leaves a factory's models alone)."""
    import ray

    def make(name: str) -> VllmChatModel:
        actor = ray.remote(ScriptedEngine).options(num_cpus=0, max_concurrency=1000, max_restarts=max_restarts)
        handle = actor.remote(delay)
        started.append(handle)
        return VllmChatModel(handle, f"scripted-{name}", max_in_flight=64, engine_info=ray.get(handle.info.remote()))

    return make


def run(
    out: Path,
    *,
    trials: int = 2,
    delay: float = 0.0,
    force: bool = False,
    progress: bool = False,
    rows_per_shard: int = 64,
    workers: int = 1,
    in_flight: int | None = None,
    models=None,
    remote=None,
):
    """Play the demo blueprints `trials` times each into `out`; `models` is a model factory (default: the
    scripted roles in process, each request taking `delay` seconds); `remote` a RemoteRun staged in `out`."""
    config = load_config(CONFIG)
    # The scripted human answers in plain text, not in the structured form the embedded model is asked for.
    phase = config.trajectories
    human = phase.human.model_copy(update={"structured": False})
    update = {"human": human, "rows_per_shard": rows_per_shard, "workers": workers, "in_flight": in_flight}
    phase = phase.model_copy(update=update)
    config = config.model_copy(update={"trajectories": phase})
    source = load_source("retail", DEMO_BLUEPRINTS)
    options = RunOptions(RunFolder(out, remote), trials=trials, force=force, progress=progress)
    return run_trajectories(config, [source], options, model_factory=models or factory(delay))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--rows-per-shard", type=int, default=64)
    # Scripted episodes all take the same time: with every one in flight they end in one burst, which on a
    # loaded machine can finish the run between two looks of a test that wants to kill it halfway.
    parser.add_argument("--in-flight", type=int, default=4, help="episodes in flight (they end in waves)")
    args = parser.parse_args()
    summary = run(
        args.out, trials=args.trials, delay=args.delay, rows_per_shard=args.rows_per_shard, in_flight=args.in_flight
    )
    print(json.dumps(summary.counts), file=sys.stdout)
