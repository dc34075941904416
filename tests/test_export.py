"""Export of a run folder built from realistic retail episodes (observations from the real environment)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from apigen_mt.pipeline.export.card_plots import PLOTS
from apigen_mt.pipeline.export.charts import CHART_COLUMNS, phase1_funnel, phase2_funnel, share_text
from apigen_mt.pipeline.export.dataset import ExportError, export_run, hub_token
from apigen_mt.pipeline.store.manifest import RunManifest, package_versions, utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import OpenAIToolCall, ToolCall
from apigen_mt.validators.sampling import trajectory_signature

CLI = Path(sys.executable).parent / "apigen-mt"
RETAIL = get_domain("retail")
SHAREGPT_ROLES = {"human", "gpt", "function_call", "observation"}
PROVENANCE = {
    "id",
    "domain",
    "blueprint_id",
    "trial",
    "instruction",
    "actions",
    "outputs",
    "reward",
    "agent_model",
    "human_model",
}


def _pending_order() -> tuple[str, dict[str, Any], dict[str, Any]]:
    db = RETAIL.load()
    order_id, order = next((key, order) for key, order in db["orders"].items() if order["status"] == "pending")
    return order_id, order, db["users"][order["user_id"]]


def _episode(opening: str, reason: str, closing: str) -> list[dict[str, Any]]:
    """A cancellation with real observations: one turn makes two calls (think, then a lookup)."""
    order_id, order, user = _pending_order()
    env = RETAIL.environment(RETAIL.load())
    ids = (f"call_{n}" for n in itertools.count(1))
    messages: list[dict[str, Any]] = [{"role": "system", "content": RETAIL.policy}]

    def calls(*steps: tuple[str, dict[str, Any]]) -> None:
        made = [OpenAIToolCall.of(ToolCall(name=name, arguments=arguments), next(ids)) for name, arguments in steps]
        messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump() for call in made]})
        for call in made:
            result = env.step(call.call())
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.function["name"], "content": result.observation}
            )

    messages.append({"role": "user", "content": opening})
    messages.append(
        {"role": "assistant", "content": "I can help with that. What is the email address on your account?"}
    )
    messages.append({"role": "user", "content": f"It is {user['email']}."})
    calls(("find_user_id_by_email", {"email": user["email"]}))
    calls(
        ("think", {"thought": f"Check that {order_id} is pending before cancelling."}),
        ("get_order_details", {"order_id": order_id}),
    )
    messages.append(
        {
            "role": "assistant",
            "content": f"Order {order_id} is pending. Shall I cancel it because it is {reason}? (yes/no)",
        }
    )
    messages.append({"role": "user", "content": "yes"})
    calls(("cancel_pending_order", {"order_id": order_id, "reason": reason}))
    messages.append({"role": "assistant", "content": closing})
    messages.append({"role": "user", "content": "Thanks. ###STOP###"})
    return messages


def _row(
    blueprint_id: str, trial: int, status: str, messages: list[dict[str, Any]], attribution: str | None = None
) -> dict[str, Any]:
    order_id, _, user = _pending_order()
    blueprint = {
        "id": blueprint_id,
        "domain": "retail",
        "user_id": user.get("id", ""),
        "instruction": f"You want to cancel order {order_id} because you no longer need it.",
        "actions": [
            {"name": "cancel_pending_order", "arguments": {"order_id": order_id, "reason": "no longer needed"}}
        ],
        "outputs": [],
    }
    agent = [m for m in messages if m["role"] == "assistant"]
    return {
        "blueprint_id": blueprint_id,
        "domain": "retail",
        "trial": trial,
        "attempt": 1,
        "status": status,
        "reasons": [] if status == "accepted" else [f"{status} because of the {attribution}"],
        "attribution": attribution,
        "reward": 1.0 if status == "accepted" else 0.0,
        "state_match": status == "accepted",
        "outputs_match": True,
        "terminated": bool(messages),
        "policy_violations": [],
        "human_errors": [],
        "termination": "user_stop" if messages else "engine_unavailable",
        "messages": json.dumps(messages),
        "tools": json.dumps([spec.openai() for spec in RETAIL.toolkit.specs()]),
        "blueprint": json.dumps(blueprint),
        "signature": trajectory_signature(messages) if messages else "",
        "turns": len(agent),
        "tool_calls": sum(len(m.get("tool_calls") or []) for m in agent),
        "prompt_tokens": 900 * len(agent),
        "completion_tokens": 40 * len(agent),
        "human_prompt_tokens": 300,
        "human_completion_tokens": 30,
        "agent_model": "agent-model",
        "human_model": "human-model",
        "duration_s": 3.5,
        "turn_stats": "[]",
        "finished_at": utc_now(),
    }


GOOD = "Order is cancelled; the refund goes to the original payment method."


def build_run(run_dir: Path) -> None:
    good_a = _episode("Hi, I need to cancel an order.", "no longer needed", GOOD)
    good_b = _episode("Hello! Please cancel one of my orders.", "no longer needed", GOOD)  # same agent behaviour
    good_other = _episode("Hi, I need to cancel an order.", "no longer needed", "Done: the order is cancelled.")
    wrong = _episode("Hi, I need to cancel an order.", "ordered by mistake", GOOD)
    rows = [
        _row("retail-cancel-0", 0, "accepted", good_a),
        _row("retail-cancel-0", 1, "accepted", good_b),
        _row("retail-cancel-0", 2, "rejected", wrong, "agent"),
        _row("retail-cancel-0", 3, "failed", [], "system"),
        _row("retail-cancel-1", 0, "accepted", good_other),
        _row("retail-cancel-1", 1, "rejected", wrong, "human"),
        _row("retail-cancel-1", 2, "rejected", wrong, "agent"),
        _row("retail-cancel-2", 0, "rejected", wrong, "agent"),
        _row("retail-cancel-2", 1, "accepted", good_a),  # replaced by the row below (a later session, --force)
    ]
    with ShardWriter(run_dir / "trajectories", TRAJECTORY_SCHEMA, rows_per_shard=4) as writer:
        for row in rows:
            writer.write(row)
    with ShardWriter(run_dir / "trajectories", TRAJECTORY_SCHEMA) as writer:
        writer.write(_row("retail-cancel-2", 1, "rejected", wrong, "agent"))
    RunFolder(run_dir).save_manifest(
        RunManifest(
            config={"trajectories": {"trials": 4}, "roles": {"agent": "smollm2"}},
            fingerprint="f" * 64,
            versions=package_versions(),
            started_at=utc_now(),
            finished_at=utc_now(),
            counts={"blueprints": {"proposed": 5, "accepted": 3, "rejected": 2}, "trajectories": {"accepted": 99}},
            command=["apigen-mt", "generate"],
        ),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    build_run(run_dir)
    export_run(run_dir)
    return run_dir


def _load_parquet(run_dir: Path, format_: str, splits: list[str], cache: Path) -> Any:
    import datasets

    files = {split: str(run_dir / "data" / format_ / f"{split}-00000.parquet") for split in splits}
    return datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache))


def test_both_layouts_load_with_load_from_disk_and_load_dataset(exported: Path, tmp_path: Path) -> None:
    import datasets

    sharegpt = datasets.load_from_disk(str(exported / "dataset"))
    openai = datasets.load_from_disk(str(exported / "dataset-openai"))
    for loaded in (sharegpt, openai):
        assert {split: loaded[split].num_rows for split in loaded} == {"train": 2, "rejected": 5, "preference": 2}
    assert "conversations" in sharegpt["train"].column_names and "messages" in openai["train"].column_names
    for format_, from_disk in (("sharegpt", sharegpt), ("openai", openai)):
        parquet = _load_parquet(exported, format_, ["train", "rejected"], tmp_path / format_)
        if format_ == "openai":  # one JSON object per message, decoded to a dict by either loader
            assert (
                parquet["train"].features["messages"]
                == from_disk["train"].features["messages"]
                == datasets.List(datasets.Json())
            )
        assert parquet["train"].to_list() == from_disk["train"].to_list()
        assert parquet["rejected"].to_list() == from_disk["rejected"].to_list()
        preference = _load_parquet(exported, format_, ["preference"], tmp_path / f"{format_}-preference")
        assert preference["preference"].to_list() == from_disk["preference"].to_list()


def check_sharegpt_row(row: dict[str, Any]) -> None:
    """formats.md section 1, APIGen-MT-5k layout."""
    assert isinstance(row["system"], str) and row["system"].startswith("# Retail")
    conversation = row["conversations"]
    assert conversation and conversation[0]["from"] == "human"
    for position, turn in enumerate(conversation):
        assert set(turn) == {"from", "value"} and turn["from"] in SHAREGPT_ROLES and isinstance(turn["value"], str)
        if turn["from"] == "function_call":
            call = json.loads(turn["value"])
            assert (
                set(call) == {"name", "arguments"}
                and isinstance(call["name"], str)
                and isinstance(call["arguments"], dict)
            )
            assert conversation[position + 1]["from"] == "observation"
        if turn["from"] == "observation":
            assert conversation[position - 1]["from"] == "function_call"
    tools = json.loads(row["tools"])
    assert {tool["name"] for tool in tools} == {spec.name for spec in RETAIL.toolkit.specs()}
    for tool in tools:
        assert set(tool) == {"name", "description", "parameters"} and tool["parameters"]["type"] == "object"
    assert PROVENANCE <= set(row)
    assert isinstance(json.loads(row["actions"]), list) and isinstance(json.loads(row["outputs"]), list)


def check_openai_row(row: dict[str, Any]) -> None:
    """formats.md section 1, OpenAI messages layout: a native list of messages with only the keys each has,
    call arguments as mappings, tool messages naming their tool; `tools` a JSON string."""
    messages = row["messages"]
    assert messages[0] == {"role": "system", "content": RETAIL.policy}
    made: dict[str, str] = {}  # call id -> tool name
    for message in messages:
        assert None not in message.values(), message
        keys = set(message) - {"reasoning_content"}
        if message["role"] == "assistant" and "tool_calls" in message:
            assert keys in ({"role", "tool_calls"}, {"role", "content", "tool_calls"}) and message["tool_calls"]
            for call in message["tool_calls"]:
                assert set(call) == {"id", "type", "function"} and call["type"] == "function"
                assert set(call["function"]) == {"name", "arguments"} and isinstance(
                    call["function"]["arguments"], dict
                )
                made[call["id"]] = call["function"]["name"]
        elif message["role"] == "tool":
            assert keys == {"role", "tool_call_id", "name", "content"} and isinstance(message["content"], str)
            assert made[message["tool_call_id"]] == message["name"]
        else:
            assert keys == {"role", "content"} and message["role"] in {"system", "user", "assistant"}
            assert isinstance(message["content"], str)
    tools = json.loads(row["tools"])
    assert all(
        tool["type"] == "function" and set(tool["function"]) == {"name", "description", "parameters"} for tool in tools
    )
    assert PROVENANCE <= set(row)


def test_every_row_follows_the_layouts_of_formats_md(exported: Path) -> None:
    import datasets

    sharegpt = datasets.load_from_disk(str(exported / "dataset"))
    openai = datasets.load_from_disk(str(exported / "dataset-openai"))
    for split in ("train", "rejected"):
        for share_row, openai_row in zip(sharegpt[split], openai[split], strict=True):
            check_sharegpt_row(share_row)
            check_openai_row(openai_row)
            calls = [c for m in openai_row["messages"] for c in m.get("tool_calls", [])]
            assert [t for t in share_row["conversations"] if t["from"] == "function_call"] == [
                {
                    "from": "function_call",
                    "value": json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]}),
                }
                for c in calls
            ]
    # Two calls in one agent turn: consecutive function_call entries, each followed by its observation.
    kinds = [turn["from"] for turn in sharegpt["train"][0]["conversations"]]
    assert kinds[:8] == [
        "human",
        "gpt",
        "human",
        "function_call",
        "observation",
        "function_call",
        "observation",
        "function_call",
    ]
    think_observation = sharegpt["train"][0]["conversations"][6]["value"]
    assert json.loads(sharegpt["train"][0]["conversations"][5]["value"])["name"] == "think" and think_observation == ""


def test_splits_hold_unique_accepted_negatives_and_preference_pairs(exported: Path) -> None:
    import datasets

    data = datasets.load_from_disk(str(exported / "dataset"))
    assert data["train"]["id"] == ["retail-cancel-0-trial0", "retail-cancel-1-trial0"]  # trial 1 repeats trial 0
    assert set(data["train"]["status"]) == {"accepted"} and data["train"]["reasons"] == [[], []]
    rejected = {row["id"]: (row["status"], row["attribution"], row["reasons"]) for row in data["rejected"]}
    assert "retail-cancel-0-trial3" not in rejected  # failed before the human said anything: left out
    assert rejected["retail-cancel-1-trial1"] == ("rejected", "human", ["rejected because of the human"])
    assert rejected["retail-cancel-2-trial1"][0] == "rejected"  # the row written last wins
    assert len(rejected) == 5
    pairs = data["preference"]
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [
        ("retail-cancel-0-trial0", "retail-cancel-0-trial2"),
        ("retail-cancel-1-trial0", "retail-cancel-1-trial2"),  # trial 1 was the simulated human's fault
    ]
    pair = pairs[0]
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert pair["chosen"][0]["role"] == "assistant" and pair["rejected"][0]["role"] == "assistant"
    chosen_reason = [c["function"]["arguments"].get("reason") for m in pair["chosen"] for c in m.get("tool_calls", [])]
    rejected_reason = [
        c["function"]["arguments"].get("reason") for m in pair["rejected"] for c in m.get("tool_calls", [])
    ]
    assert "no longer needed" in chosen_reason and "ordered by mistake" in rejected_reason


def test_openai_rows_go_through_a_tool_aware_chat_template(exported: Path) -> None:
    import datasets
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from apigen_mt.pipeline.engines.tiny_test_model import CHAT_TEMPLATE, SPECIAL_TOKENS

    # The tiny test model's ChatML template (it lists `tools=` in the system turn) on a word-level
    # tokenizer built in memory: the template is what is under test, not the vocabulary.
    vocabulary = {token: index for index, token in enumerate([*SPECIAL_TOKENS, "[UNK]"])}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    row = datasets.load_from_disk(str(exported / "dataset-openai"))["train"][0]
    text = tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=False)
    assert text.startswith("<|im_start|>system\n# Retail") and "# Tools" in text and '"cancel_pending_order"' in text
    assert text.count("<|im_start|>") == len(row["messages"])
    for message in row["messages"]:
        if message["role"] in ("user", "tool") and message["content"]:
            assert message["content"] in text
    assert '"name": "get_order_details"' in text and '"arguments": {"order_id": "#W' in text
    encoded = tokenizer.apply_chat_template(
        row["messages"], tools=json.loads(row["tools"]), tokenize=True, return_dict=True
    )
    starts = encoded["input_ids"].count(tokenizer.convert_tokens_to_ids("<|im_start|>"))
    assert starts == len(row["messages"]) and encoded["input_ids"].count(tokenizer.eos_token_id) == len(row["messages"])


def test_card_reports_the_funnel_pass_k_and_statistics(exported: Path) -> None:
    card = (exported / "README.md").read_text()
    _, matter, body = card.split("---\n", 2)
    metadata = yaml.safe_load(matter)
    assert metadata["pretty_name"].startswith("APIGen-MT") and metadata["size_categories"] == ["n<1K"]
    assert "retail" in metadata["tags"]
    configs = {config["config_name"]: config for config in metadata["configs"]}
    assert set(configs) == {"sharegpt", "openai", "preference"} and configs["sharegpt"]["default"] is True
    for config in configs.values():
        for entry in config["data_files"]:
            assert list(exported.glob(entry["path"])), entry
    # Phase 2's funnel: 10 rows stored, 9 trials after the replaced one, each stage with its share of the one before
    # (tests/test_charts.py checks the stages); no Phase 1 funnel without Phase 1 shards.
    for line in (
        "3 blueprints have trials; 2 of them a verified trajectory.",
        "| stage | trials | kept |",
        "| trials played | 9 | – |",
        "| judged | 8 | 89% |",
        "| final database right | 3 | 38% |",
        "| accepted | 3 | 100% |",
        "| unique accepted trajectories | 2 | 67% |",
    ):
        assert line in body, line
    assert "### Phase 1" not in body and "| 99 |" not in body  # trajectories are recounted from the shards
    # pass^k: blueprint 0 has 2 of 4 accepted, blueprint 1 1 of 3, blueprint 2 0 of 2.
    assert f"| 1 | {(2 / 4 + 1 / 3 + 0) / 3:.4f} | 3 |" in body
    assert f"| 2 | {(1 / 6 + 0 + 0) / 3:.4f} | 3 |" in body
    assert "| 3 | 0.0000 | 2 |" in body and "| 4 | 0.0000 | 1 |" in body
    assert "| agent | 4 |" in body and "| human | 1 |" in body and "| system | 1 |" in body
    assert "| rule | trials |\n|---|---:|\n| (no violation) | 0 |" in body
    assert "| agent turns | accepted | rejected or failed |\n|---:|---:|---:|\n| 0 | 0 | 1 |\n| 6 | 3 | 5 |\n" in body
    assert "| engine_unavailable | 1 |" in body and "| user_stop | 8 |" in body
    assert "| agent turns | 6 | 6 | 6 |" in body and "| tool calls | 4 | 4 | 4 |" in body
    assert "| `cancel_pending_order` | 2 |" in body and "| `think` | 2 |" in body
    assert "trials: 4" in body  # the run's config
    # The card's own example loads the data it names, run from the dataset folder as a reader would.
    example = body.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    cwd = os.getcwd()
    try:
        os.chdir(exported)
        exec(example, namespace)
    finally:
        os.chdir(cwd)
    assert namespace["data"]["train"].num_rows == 2
    # Every plot is shown by the card, and each is a picture of some size.
    assert re.findall(r"\]\(plots/([^)]+)\)", body) == list(PLOTS)
    assert sorted(path.name for path in (exported / "plots").iterdir()) == sorted(PLOTS)
    for plot in PLOTS:
        data = (exported / "plots" / plot).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_the_card_of_a_run_with_both_phases_has_one_funnel_for_each(exported: Path, tmp_path: Path) -> None:
    from PIL import Image

    run_dir = tmp_path / "run"  # Phase 1's proposals and Phase 2's trials of them (tests/test_run_folder.py)
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "run-before-redesign" / "run", run_dir)
    folder = RunFolder(run_dir)
    manifest = folder.manifest()
    manifest.counts = folder.counts(manifest.counts, None)  # as a rerun counts it: stage 1 under its own key
    folder.save_manifest(manifest)
    export_run(run_dir)
    body = (run_dir / "README.md").read_text()
    # Phase 2's stage 1 is counted in tasks, not trials: beside its funnel.
    assert "Stage 1 of the tasks given to Phase 2: 8 given, 8 valid, 0 rejected" in body
    phase1 = body.split("### Phase 1: proposal rounds\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    phase2 = body.split("### Phase 2: trials\n\n", 1)[1].split("| stage |", 1)[1].split("\n\n", 1)[0].splitlines()
    for table, stages in (
        (phase1, phase1_funnel(folder.funnel())),
        (phase2[2:], phase2_funnel(folder.trials(list(CHART_COLUMNS)))),
    ):
        assert table[-len(stages) :] == [f"| {s.label} | {s.count} | {share_text(s.kept)} |" for s in stages]
    assert "| rounds proposed | 17 | – |" in phase1 and "| accepted blueprints | 6 | 86% |" in phase1
    assert "| proposals (sampled contexts) | 12 |" in body  # counted in proposals, beside the funnel
    # One panel per phase: the figure is as tall as both funnels, taller than the Phase-2 funnel alone.
    with Image.open(run_dir / "plots" / "funnel.png") as both, Image.open(exported / "plots" / "funnel.png") as one:
        assert both.width == one.width and both.height > one.height + 300


def test_export_is_rerunnable_and_replaces_what_it_wrote(exported: Path, tmp_path: Path) -> None:
    import datasets

    run_dir = tmp_path / "run"
    shutil.copytree(exported, run_dir)
    result = export_run(run_dir, formats=["openai"], splits=["train"])
    assert result.rows == {"train": 2, "rejected": 0, "preference": 0}
    assert result.system_failures == {"engine_unavailable": 1} and result.left_out == {}  # the failed trial
    assert result.datasets == {"openai": run_dir / "dataset"} and not (run_dir / "dataset-openai").exists()
    assert sorted(str(p.relative_to(run_dir)) for p in (run_dir / "data").rglob("*.parquet")) == [
        "data/openai/train-00000.parquet"
    ]
    assert list(datasets.load_from_disk(str(run_dir / "dataset"))) == ["train"]
    assert "messages" in datasets.load_from_disk(str(run_dir / "dataset"))["train"].column_names
    assert [
        c["config_name"] for c in yaml.safe_load((run_dir / "README.md").read_text().split("---\n")[1])["configs"]
    ] == ["openai"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".apigen-") and p.name.endswith(".tmp")]


def test_push_to_hub_without_a_token_fails_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_run(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ExportError, match="HF_TOKEN"):
        export_run(tmp_path, push_to_hub="someone/apigen-mt-test")
    assert not (tmp_path / "dataset").exists()
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert hub_token() == "hf_not_a_real_token"


def test_the_cards_example_names_a_split_the_export_wrote() -> None:
    from apigen_mt.pipeline.export.card import load_example

    assert '"train": "data/sharegpt/train-*.parquet"' in load_example({"sharegpt": {"train": 3, "rejected": 1}})
    # A run with nothing accepted (the embedded model's usual result) still gets a line that works.
    assert '"rejected": "data/openai/rejected-*.parquet"' in load_example({"openai": {"train": 0, "rejected": 15}})
    assert load_example({"sharegpt": {}}).startswith("#")


def _run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "HF_TOKEN"} | env
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=180, env=environment)


def test_cli_push_to_an_unreachable_hub_is_one_clear_line(exported: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(exported, run_dir)
    # Nothing listens on the discard port: the upload fails to connect, as when offline.
    done = _run_cli(
        "export",
        str(run_dir),
        "--push-to-hub",
        "someone/apigen-mt-test",
        HF_TOKEN="hf_x",
        HF_ENDPOINT="http://127.0.0.1:9",
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(
        "apigen-mt: error: could not push to the Hugging Face Hub"
    )
    assert "Traceback" not in done.stderr and (run_dir / "dataset").is_dir()
    offline = _run_cli("export", str(run_dir), "--push-to-hub", "someone/x", HF_TOKEN="hf_x", HF_HUB_OFFLINE="1")
    assert offline.returncode == 2 and offline.stderr == (
        "apigen-mt: error: --push-to-hub cannot work offline: HF_HUB_OFFLINE is set; unset it when online and rerun\n"
    )
    no_token = _run_cli("export", str(run_dir), "--push-to-hub", "someone/x")
    assert no_token.returncode == 2 and no_token.stderr.count("\n") == 1 and "HF_TOKEN" in no_token.stderr


def test_cli_export_of_a_folder_without_shards_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "trajectories").mkdir()
    done = _run_cli("export", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"apigen-mt: error: {tmp_path} holds no trajectory shards")
    bad_format = _run_cli("export", str(tmp_path), "--format", "xml")
    assert bad_format.returncode == 2 and "--format 'xml' is not one of sharegpt, openai, both" in bad_format.stderr


def test_sharegpt_pairs_calls_with_results_by_id_and_drops_only_a_trailing_unanswered_call() -> None:
    from apigen_mt.pipeline.export.layouts import sharegpt_conversation

    def call(call_id: str, name: str) -> dict[str, Any]:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": '{"order_id": "#W1"}'}}

    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [call("a", "get_order_details"), call("b", "get_user_details")],
        },
        {"role": "tool", "tool_call_id": "b", "content": "user"},  # results may come in any order
        {"role": "tool", "tool_call_id": "a", "content": "order"},
        {"role": "assistant", "content": None, "tool_calls": [call("c", "cancel_pending_order")]},
    ]
    system, turns = sharegpt_conversation(messages, "t")
    assert system == "policy"
    assert [(turn["from"], turn["value"]) for turn in turns] == [
        ("human", "hi"),
        ("gpt", "Let me look."),
        ("function_call", '{"name": "get_order_details", "arguments": {"order_id": "#W1"}}'),
        ("observation", "order"),
        ("function_call", '{"name": "get_user_details", "arguments": {"order_id": "#W1"}}'),
        ("observation", "user"),
    ]
    with pytest.raises(ExportError, match="trajectory t: tool call 'cancel_pending_order' has no tool message"):
        sharegpt_conversation([*messages, {"role": "user", "content": "hello?"}], "t")


def test_sharegpt_function_calls_hold_their_arguments_as_an_object_whatever_form_they_were_stored_in() -> None:
    from apigen_mt.pipeline.export.layouts import sharegpt_conversation

    arguments = {"order_id": "#W1", "item_ids": ["1", "2"], "note": "caf\u00e9"}
    for stored in (json.dumps(arguments), arguments):  # the API's string form, or already a mapping
        call = {"id": "a", "type": "function", "function": {"name": "get_order_details", "arguments": stored}}
        messages = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "a", "name": "get_order_details", "content": "order"},
        ]
        _, turns = sharegpt_conversation(messages, "t")
        assert json.loads(turns[1]["value"]) == {"name": "get_order_details", "arguments": arguments}


def test_openai_messages_keep_only_their_own_keys_name_each_tool_and_decode_arguments() -> None:
    from apigen_mt.pipeline.export.layouts import openai_messages

    def call(call_id: str, arguments: Any) -> dict[str, Any]:
        return {"id": call_id, "type": "function", "function": {"name": "get_order_details", "arguments": arguments}}

    stored = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "hi", "name": "someone"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [call("a", '{"order_id": "#W1"}')],
            "reasoning_content": "look it up",
        },
        {"role": "tool", "tool_call_id": "a", "content": "order"},  # no name: the call with its id names it
        {"role": "assistant", "content": None, "tool_calls": [call("b", "{not json")]},
        {"role": "tool", "tool_call_id": "b", "name": "get_order_details", "content": "error"},
        {"role": "assistant", "content": "Done.", "tool_calls": None, "tool_call_id": None},
    ]
    assert openai_messages(stored, "t") == [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [call("a", {"order_id": "#W1"})],
            "reasoning_content": "look it up",
        },
        {"role": "tool", "tool_call_id": "a", "name": "get_order_details", "content": "order"},
        {"role": "assistant", "tool_calls": [call("b", {"__raw__": "{not json"})]},  # as simulators.types keeps it
        {"role": "tool", "tool_call_id": "b", "name": "get_order_details", "content": "error"},
        {"role": "assistant", "content": "Done."},
    ]
    with pytest.raises(ExportError, match="trajectory t: tool message 1 names no tool and answers no earlier call"):
        openai_messages([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "?"}], "t")
