"""ReplayEndpoint: a TEST DOUBLE of an OpenAI-compatible server (the loopback endpoint of tests/loopback_endpoint.py)
whose agent replays a task's ground truth. Part of the tests, not of the project.

It is given the task set (the blueprints the eval plays). The simulated human finds its task in its system prompt
(the task's instruction, or a tau2 task's scenario as the prompt gives it) and opens with the task's instruction;
the agent finds the task by that first message, calls the task's ground-truth actions one per turn, then says the
task's expected outputs; the human's next turn ends the chat with ###STOP###. Every other role (the human's judge
among them) answers as the loopback endpoint does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from apigen_mt.simulators.human_prompts import STOP, scenario_task
from apigen_mt.simulators.types import Blueprint
from tests.conftest import load_test_module

loopback = load_test_module("loopback_endpoint")
DONE = "Thank you, that is everything."


class ReplayEndpoint(loopback.LoopbackEndpoint):
    """The loopback endpoint whose agent and human play each task's ground truth."""

    def __init__(self, tasks: Sequence[Blueprint], models: tuple[str, ...] = ("replay",)) -> None:
        super().__init__(models=models)
        self.tasks = list(tasks)
        self.unmatched: list[str] = []  # openings or prompts no task matched: a bug of this double or of the test

    def _role_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        role = loopback.role_of(body)
        if role == "agent":
            message = self._agent_message(body["messages"])
        elif role == "human":
            message = {"role": "assistant", "content": self._human_text(body["messages"])}
        else:
            return super()._role_answer(body)
        choices = [{"message": message, "finish_reason": "stop"}] * body.get("n", 1)
        return loopback.chat_body(*choices, model=body["model"])

    # --- the human ----------------------------------------------------------------------------------------------

    def _task_in_prompt(self, system: str) -> Blueprint | None:
        """The task whose instruction (or scenario, as the human's prompt gives it) the prompt holds; the longest
        such text when several do."""
        given = system.split("# Your task", 1)[-1]
        found = [(len(text), task) for task in self.tasks if (text := _task_text(task)) and text in given]
        return max(found, key=lambda pair: pair[0])[1] if found else None

    def _human_text(self, messages: list[dict[str, Any]]) -> str:
        system = messages[0]["content"]
        opening = not any(message["role"] == "assistant" for message in messages)
        task = self._task_in_prompt(system) if opening else None
        if opening and task is None:
            self.unmatched.append(f"human prompt: {system[-200:]}")
        text, stop = (task.instruction, False) if task is not None else (DONE, True)
        if '"stop": <true or false>' in system:
            return json.dumps({"message": text, "stop": stop})
        return f"{text} {STOP}" if stop else text

    # --- the agent ----------------------------------------------------------------------------------------------

    def _agent_message(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        opening = next((str(m.get("content") or "") for m in messages if m["role"] == "user"), "")
        task = next((task for task in self.tasks if task.instruction.strip() == opening.strip()), None)
        if task is None:
            self.unmatched.append(f"agent opening: {opening[:200]}")
            return {"role": "assistant", "content": "I cannot find your request."}
        made = sum(len(message.get("tool_calls") or []) for message in messages if message["role"] == "assistant")
        if made < len(task.actions):
            action = task.actions[made]
            call = {"name": action.name, "arguments": json.dumps(action.arguments)}
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{made}", "type": "function", "function": call}],
            }
        said = "; ".join(task.outputs)
        return {"role": "assistant", "content": f"All done. {said}".strip()}


def _task_text(task: Blueprint) -> str:
    return (task.instruction if task.scenario is None else scenario_task(task.scenario)).strip()
