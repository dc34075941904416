"""Exported OpenAI-layout rows rendered through real chat templates (`../shared/chat-templates/`).

The run is played by tests/scripted_job.py's scripted roles (test doubles), with these changes: the agent
gets demo-retail-cancel-2 wrong on trial 0 only (a rejected row and a preference pair), its closing reply on
demo-retail-status-2 comes with thinking, and the simulated human fails on demo-retail-status-1 before
saying anything (a trial with no conversation). One more row, a copy of an accepted one with thinking on
every agent message (`reasoning_content`, where the episode stores thinking), is written to the run as a
rejected trial, so that rows with thinking reach every split whatever the episode does with it.

Every row of every split, loaded both ways, goes through every template with transformers' own renderer:
no error, and each call's arguments written as a JSON object, never as a quoted string.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.pipeline.export.dataset import ExportResult, export_run
from apigen_mt.pipeline.run.trials import stable_seed
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter, read_rows
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, Completion
from apigen_mt.simulators.types import ToolCall
from tests.conftest import SHARED, load_by_value

job = load_by_value("scripted_job")
TEMPLATES = SHARED / "chat-templates"
TEMPLATE_NAMES = ("hermes", "llama3.1_json", "xlam_llama", "xlam_qwen")
CLI = Path(sys.executable).parent / "apigen-mt"
SILENT = "demo-retail-status-1"  # the human fails before its first message
THINKING = "demo-retail-status-2"  # the agent's closing reply carries thinking
CANCEL_WRONG = next(iter(job.WRONG))  # wrong on trial 0 only here
THOUGHT = "The order status is known, so I can answer the user now."


def agent(request: ChatRequest) -> Any:
    blueprint = job._blueprint_of(request)
    if (
        blueprint is not None
        and blueprint["id"] == CANCEL_WRONG
        and request.sampling.seed == stable_seed(CANCEL_WRONG, 1)
    ):
        done = sum(1 for message in request.messages if message.role == "tool")
        if done < len(blueprint["actions"]):
            return ToolCall.model_validate(blueprint["actions"][done])
    reply = job.scripted_agent(request)
    if blueprint is not None and blueprint["id"] == THINKING and isinstance(reply, str):
        return Completion(text=reply, content=reply, reasoning=THOUGHT, finish_reason="stop")
    return reply


def human(request: ChatRequest) -> Any:
    blueprint = job._blueprint_of(request)
    if blueprint is not None and blueprint["id"] == SILENT:
        return ChatResponse(model="scripted-human", error="HTTP 503: the scripted human endpoint is down")
    return job.scripted_human(request)


def models(name: str) -> Any:
    def script(request: ChatRequest) -> Any:
        return agent(request) if request.tools else human(request)

    return job.DelayedScripted(script, model_id=f"scripted-{name}", delay=0.0)


def _with_thinking(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored row as a later rejected trial, thinking on each agent message."""
    messages = json.loads(row["messages"])
    for position, message in enumerate(messages):
        if message["role"] == "assistant":
            message["reasoning_content"] = f"Step {position}: check the policy before answering."
    reasons = ["rejected by the test: a copy of an accepted trial carrying thinking"]
    update = {"trial": 2, "status": "rejected", "attribution": "agent", "reasons": reasons, "reward": 0.0}
    return row | update | {"messages": json.dumps(messages)}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportResult]:
    import ray

    out = tmp_path_factory.mktemp("templates") / "run"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        job.run(out, trials=2, models=models)
    finally:
        ray.shutdown()
    stored = {(row["blueprint_id"], row["trial"]): row for row in read_rows(out / "trajectories").to_pylist()}
    with ShardWriter(out / "trajectories", TRAJECTORY_SCHEMA) as writer:
        writer.write(_with_thinking(stored[(THINKING, 0)]))
    return out, export_run(out)


def shared_templates() -> dict[str, str]:
    """The four shared templates by name; skips the test when `../shared/chat-templates` is absent."""
    if not TEMPLATES.is_dir():
        pytest.skip(
            f"shared chat templates not found at {TEMPLATES} (expected ../shared/chat-templates beside the checkout)"
        )
    return {name: (TEMPLATES / f"{name}.jinja").read_text() for name in TEMPLATE_NAMES}


def _load(run_dir: Path, loader: str, cache: Path) -> Any:
    import datasets

    if loader == "load_from_disk":
        return datasets.load_from_disk(str(run_dir / "dataset-openai"))
    folder = run_dir / "data" / "openai"
    loaded = {}
    for split in ("train", "rejected", "preference"):  # the pairs have their own columns: loaded on their own
        if not (folder / f"{split}-00000.parquet").exists():  # a split with no rows is not written
            continue
        loaded[split] = datasets.load_dataset(
            "parquet", data_files={split: str(folder / f"{split}-00000.parquet")}, cache_dir=str(cache / split)
        )[split]
    return loaded


def conversations(loaded: Any) -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """(where, messages, tools) of every row: train and rejected rows whole, each pair as prompt + chosen and
    prompt + rejected."""
    found = []
    for split in ("train", "rejected"):
        for row in loaded[split] if split in loaded else []:
            found.append((f"{split} {row['id']}", row["messages"], json.loads(row["tools"])))
    for pair in loaded["preference"] if "preference" in loaded else []:
        for side in ("chosen", "rejected"):
            where = f"preference {pair['chosen_id']}/{pair['rejected_id']} {side}"
            found.append((where, pair["prompt"] + pair[side], json.loads(pair["tools"])))
    return found


def render(template: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """The text transformers' `apply_chat_template` makes of the conversation (it forwards to this renderer)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template, bos_token="<s>")
    return rendered[0]


def written_arguments(text: str) -> list[Any]:
    """Each JSON value the text writes after `"arguments": ` or `"parameters": ` (the keys the templates write
    a call's arguments under; tool schemas' `parameters` are among them)."""
    decoder = json.JSONDecoder()
    values = []
    for match in re.finditer(r'"(?:arguments|parameters)": ', text):
        try:
            values.append(decoder.raw_decode(text, match.end())[0])
        except json.JSONDecodeError:
            continue  # prose such as "arguments": <args-dict> in a template's instructions
    return values


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def template_problems(
    found: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]], templates: dict[str, str]
) -> list[str]:
    """What goes wrong rendering each conversation through each template: a refusal, arguments written as a
    quoted string, a call whose arguments are not written as an object, a Hermes tool response without its name."""
    problems = []
    for name, template in templates.items():
        for where, conversation, tools in found:
            try:
                text = render(template, conversation, tools)
            except Exception as exc:  # noqa: BLE001 - the template's refusal, reported with the row it refused
                problems.append(f"{name} refused {where}: {type(exc).__name__}: {exc}")
                continue
            calls = [call["function"] for message in conversation for call in message.get("tool_calls") or []]
            meant = [
                arguments if isinstance(arguments := call["arguments"], dict) else json.loads(arguments)
                for call in calls
            ]
            written = written_arguments(text)
            stringified = [value for value in written if isinstance(value, str)]
            if stringified:
                problems.append(f"{name} wrote arguments of {where} as quoted strings: {stringified[:2]}")
            missing = Counter(_key(arguments) for arguments in meant) - Counter(_key(value) for value in written)
            if missing:
                problems.append(f"{name} did not write these arguments of {where} as objects: {list(missing)}")
            for message in conversation:
                response = {"name": message.get("name"), "content": message.get("content")}
                if (
                    name == "hermes"
                    and message["role"] == "tool"
                    and json.dumps(response, ensure_ascii=False) not in text
                ):
                    problems.append(f"hermes wrote a tool response of {where} without its tool's name")
    return problems


@pytest.mark.parametrize("loader", ["load_from_disk", "load_dataset"])
def test_every_exported_row_renders_through_every_template_with_arguments_as_objects(
    run: tuple[Path, ExportResult], loader: str, tmp_path: Path
) -> None:
    templates = shared_templates()
    found = conversations(_load(run[0], loader, tmp_path))
    # What the run holds: calls with results, text replies, thinking, rejected rows and preference pairs.
    splits = Counter(where.split()[0] for where, _, _ in found)
    # The trials the system failed (two of them after the human had spoken) are in no split.
    assert splits == {"train": 3, "rejected": 2, "preference": 4}, splits
    messages = [message for _, conversation, _ in found for message in conversation]
    assert {"system", "user", "assistant", "tool"} == {message["role"] for message in messages}
    assert any(message["role"] == "assistant" and "tool_calls" not in message for message in messages)
    assert any("reasoning_content" in message for message in messages)
    # llama3.1_json refuses several calls in one message; the scripted agent makes one per turn.
    assert all(len(message.get("tool_calls", [])) <= 1 for message in messages)
    assert template_problems(found, templates) == []


def test_the_template_check_catches_the_old_layouts_faults() -> None:
    """Rows as the export wrote them before: arguments as JSON strings, tool messages without `name`, every
    message with every key (null where absent). The check must name each fault."""
    arguments = {"order_id": "#W1"}
    call = {
        "id": "a",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": json.dumps(arguments)},
    }
    old = [
        {"role": "system", "content": "policy", "tool_calls": None, "tool_call_id": None},
        {"role": "user", "content": "Where is my order #W1?", "tool_calls": None, "tool_call_id": None},
        {"role": "assistant", "content": None, "tool_calls": [call], "tool_call_id": None},
        {"role": "tool", "content": "pending", "tool_calls": None, "tool_call_id": "a"},
        {"role": "assistant", "content": "It is pending.", "tool_calls": None, "tool_call_id": None},
    ]
    function = {"name": "get_order_details", "description": "d", "parameters": {"type": "object", "properties": {}}}
    tools = [{"type": "function", "function": function}]
    problems = template_problems([("old row", old, tools)], shared_templates())
    assert any(problem.startswith("hermes refused old row") and "'name'" in problem for problem in problems), problems
    assert any(problem.startswith("llama3.1_json refused old row") for problem in problems), problems
    for name in ("xlam_llama", "xlam_qwen"):
        assert f"{name} wrote arguments of old row as quoted strings: ['{json.dumps(arguments)}']" in problems, problems
        assert f"{name} did not write these arguments of old row as objects: ['{_key(arguments)}']" in problems


def test_rows_keep_the_keys_each_message_has_and_the_stored_thinking(run: tuple[Path, ExportResult]) -> None:
    import datasets

    run_dir, _ = run
    rows = read_rows(run_dir / "trajectories").to_pylist()
    stored = {f"{row['blueprint_id']}-trial{row['trial']}": json.loads(row["messages"]) for row in rows}
    loaded = datasets.load_from_disk(str(run_dir / "dataset-openai"))
    assert loaded["train"].features["messages"] == datasets.List(datasets.Json())
    for split in ("train", "rejected"):
        for row in loaded[split] if split in loaded else []:
            original = stored[row["id"]]
            assert [message["role"] for message in row["messages"]] == [message["role"] for message in original]
            for message, source in zip(row["messages"], original, strict=True):
                assert None not in message.values()
                assert message.get("reasoning_content") == source.get("reasoning_content")
                assert ("tool_calls" in message) == bool(source.get("tool_calls"))
                if message["role"] == "tool":
                    assert (message["name"], message["tool_call_id"]) == (source["name"], source["tool_call_id"])
                else:
                    assert "tool_call_id" not in message and "name" not in message
                for call, source_call in zip(message.get("tool_calls", []), source.get("tool_calls", []), strict=True):
                    assert call["function"]["arguments"] == json.loads(source_call["function"]["arguments"])
    copy = next(row for row in loaded["rejected"] if row["trial"] == 2)
    thinking = [message for message in copy["messages"] if message["role"] == "assistant"]
    assert thinking and all(message["reasoning_content"].startswith("Step ") for message in thinking)


def test_the_trials_the_system_failed_stay_in_the_shards_and_go_in_no_split(
    run: tuple[Path, ExportResult], tmp_path: Path
) -> None:
    import datasets

    run_dir, result = run
    silent = [row for row in read_rows(run_dir / "trajectories").to_pylist() if row["blueprint_id"] == SILENT]
    assert len(silent) == 2 and all(row["status"] == "failed" and row["termination"] == "model_error" for row in silent)
    assert all("human model's backend failed" in row["reasons"][0] for row in silent)
    assert all([message["role"] for message in json.loads(row["messages"])] == ["system"] for row in silent)
    # With the two of demo-retail-cancel-3, whose agent endpoint failed after the human had spoken.
    assert result.system_failures == {"model_error": 4} and result.left_out == {}
    for folder in ("dataset", "dataset-openai"):
        loaded = datasets.load_from_disk(str(run_dir / folder))
        assert not [
            row["id"] for split in ("train", "rejected") for row in loaded[split] if row["blueprint_id"] == SILENT
        ]
        assert not [pair for pair in loaded["preference"] if SILENT in (pair["blueprint_id"], pair["rejected_id"])]
        assert "failed" not in [*loaded["train"]["status"], *loaded["rejected"]["status"]]
        for row in loaded["rejected"]:  # every exported conversation starts with the human
            first = row["conversations"][0]["from"] if "conversations" in row else row["messages"][1]["role"]
            assert first in ("human", "user"), row["id"]
    # The card and the export's summary say how many were left out and why.
    card = (run_dir / "README.md").read_text()
    assert "Left out of every split: 4 trial(s) that failed because of the system" in card and "model_error 4." in card
    done = subprocess.run(
        [str(CLI), "export", str(run_dir), "--format", "openai"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert (
        "left out 4 trials that failed because of the system (an endpoint or engine down or answering garbage: not "
        "data; a rerun plays them again while they have attempts left); how they ended: model_error 4" in done.stderr
    )
