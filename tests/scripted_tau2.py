"""Scripted Phase-1 roles for the decontamination-by-split test (test doubles, never a backend of the main job).

The proposer makes, for each sampled user, a valid change of that user's address (scripted_phase1's), whose
instruction copies a tau2-bench retail task word for word: a task of the test split for users of kind "test",
else a task of the train split. The reviewers approve every task (scripted_phase1's). `configure` gives the two
texts before the module travels to Ray's workers by value.
"""

from __future__ import annotations

import json
import re
import zlib

from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.simulators.chat import ChatRequest

TEXTS: dict[str, str] = {}  # "test" / "train" -> the instruction a proposal copies
ADDRESSES: dict[str, dict[str, str]] = {}  # user id -> the address the proposal sets (scripted_phase1's)


def kind(user_id: str) -> str:
    return ("train", "test")[zlib.crc32(user_id.encode()) % 2]


def configure(texts: dict[str, str], addresses: dict[str, dict[str, str]]) -> None:
    TEXTS.update(texts)
    ADDRESSES.update(addresses)


def _proposal(request: ChatRequest) -> str:
    user_id = re.search(r"user id: (\S+)", request.messages[-1].content or "").group(1)
    arguments = {"user_id": user_id, **ADDRESSES[user_id]}
    task = {
        "thought": "A copy of a benchmark task.",
        "instruction": TEXTS[kind(user_id)],
        "actions": [{"name": "modify_user_address", "arguments": arguments}],
        "outputs": [],
    }
    return json.dumps(task)


def _review(request: ChatRequest) -> str:
    from apigen_mt.blueprints.review import CRITERIA

    return json.dumps({"reflection": "Fine.", **{criterion: 1 for criterion in CRITERIA}})


def factory(name: str) -> ScriptedChatModel:
    def script(request: ChatRequest) -> str:
        system = request.messages[0].content or ""
        if system.startswith("You design tasks"):
            return _proposal(request)
        if system.startswith("You review tasks"):
            return _review(request)
        raise AssertionError(f"the scripted tau2 roles play Phase 1 only; asked: {system[:60]!r}")

    return ScriptedChatModel(script, model_id=f"scripted-{name}")
