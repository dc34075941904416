"""`apigen-mt export RUN --format tasks`: accepted blueprints as a dataset of tasks that rebuild their episodes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.rl.tasks import TaskRowError, task_env, task_info
from apigen_mt.pipeline.store.run_folder import RunFolder

RUN = Path(__file__).resolve().parent / "fixtures" / "run-before-redesign" / "run"
CLI = [str(Path(sys.executable).with_name("apigen-mt"))]


def export(run: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "export", str(run), *options], capture_output=True, text=True, timeout=120)


async def replay_ground_truth(env) -> None:
    """The blueprint's own actions as the agent's turns, then its outputs said; the human then stops."""
    await env.reset()
    for index, action in enumerate(env.blueprint.actions):
        call = {"id": f"call_{index}", "function": {"name": action.name, "arguments": json.dumps(action.arguments)}}
        await env.step({"role": "assistant", "content": None, "tool_calls": [call]})
        if env.done:  # a terminating tool (transfer) ends the episode
            return
    await env.step({"role": "assistant", "content": "Done. " + " ".join(env.blueprint.outputs)})


def test_the_tasks_export_round_trips_every_accepted_blueprint_to_a_reward_of_1(tmp_path):
    from datasets import load_dataset, load_from_disk

    run = shutil.copytree(RUN, tmp_path / "run")
    done = export(run, "--format", "tasks")
    assert done.returncode == 0, done.stderr
    accepted = RunFolder(run).accepted_blueprints()
    assert f"exported {len(accepted)} tasks" in done.stderr and len(accepted) == 6
    rows = load_from_disk(str(run / "dataset-tasks"))["train"]
    parquet = load_dataset("parquet", data_files=str(run / "data-tasks" / "train-00000.parquet"))["train"]
    assert rows.to_list() == parquet.to_list()
    assert rows.column_names == ["prompt", "tools", "task_id", "domain", "info"]
    assert rows["task_id"] == [str(blueprint.id) for blueprint in accepted]
    for row, blueprint in zip(rows, accepted):
        assert row["prompt"][0]["role"] == "system" and row["prompt"][1] == {"role": "user", "content": ""}
        info = task_info(row)
        assert info.blueprint == blueprint and info.data_source == "seeded"
        human = ScriptedChatModel([blueprint.instruction, "Thanks ###STOP###"], model_id="scripted-human")
        env = task_env(row, human)
        assert env.tools == json.loads(row["tools"])
        asyncio.run(replay_ground_truth(env))
        breakdown = env.reward()
        assert (breakdown.reward, breakdown.components["state"], breakdown.components["outputs"]) == (1.0, 1.0, 1.0)
    # The trials' export and the tasks' leave each other's outputs alone.
    assert export(run, "--format", "openai").returncode == 0
    assert (run / "dataset-tasks").is_dir() and (run / "dataset").is_dir()


def test_a_row_that_cannot_rebuild_its_episode_says_why():
    with pytest.raises(TaskRowError, match="task 't1' has no 'info' column"):
        task_info({"task_id": "t1"})
    with pytest.raises(TaskRowError, match=r"task 't1': info\.blueprint: Field required"):
        task_info({"task_id": "t1", "info": json.dumps({"task_id": "t1", "domain": "retail"})})


def test_export_tasks_of_a_run_without_proposals_or_with_options_it_ignores_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = export(empty, "--format", "tasks")
    assert done.returncode == 2 and "holds no Phase 1 proposals" in done.stderr and "Traceback" not in done.stderr
    done = export(empty, "--format", "tasks", "--split", "train")
    assert done.returncode == 2 and "drop --split and --push-to-hub" in done.stderr
