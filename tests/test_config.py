"""Run configs: the shipped ones load, bad ones say where they are wrong, `embedded:` resolves locally."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import yaml

from apigen_mt.pipeline.config import ConfigError, VllmModel, load_config, resolve_model_path
from apigen_mt.pipeline.engines import Engines
from apigen_mt.pipeline.models import CACHE_ENV, ModelError
from apigen_mt.pipeline.openai_backend import OpenAIChatModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["local-cpu.yaml", "gpu-cluster.yaml", "openai-endpoint.yaml", "xlam-teacher.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.roles.agent in config.models
    assert len(config.fingerprint()) == 64


def test_default_config_runs_every_role_on_the_embedded_model_through_vllm():
    config = load_config(CONFIGS / "local-cpu.yaml")
    (name,) = {getattr(config.roles, role) for role in ("proposer", "reviewer", "human", "human_judge", "agent")}
    model = config.models[name]
    assert isinstance(model, VllmModel)
    assert model.engine.model == "embedded:smollm2-135m-instruct" and model.engine.device == "cpu"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


ROLES = "roles: {proposer: m, reviewer: m, human: m, human_judge: m, agent: %s}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [", "is not valid YAML"),
        ("models: {m: {backend: vllm, engine: {model: x}}}\n" + ROLES % "other", "roles.agent names model 'other'"),
        ("models: {m: {backend: tgi, engine: {model: x}}}\n" + ROLES % "m", "models.m"),
        ("models: {m: {backend: vllm, engine: {model: x, gpu_memory_utilization: 2}}}\n" + ROLES % "m", "gpu_memory_utilization"),
        ("models: {m: {backend: openai, endpoint: {base_url: localhost, model: x}}}\n" + ROLES % "m", "base_url must start with http"),
        ("models: {m: {backend: vllm, engine: {model: x}}}\n" + ROLES % "m" + "extra: 1\n", "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match="run.yaml") as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_changes_with_the_config(tmp_path):
    base = "models: {m: {backend: vllm, engine: {model: x}}}\n" + ROLES % "m"
    changed = "models: {m: {backend: vllm, engine: {model: y}}}\n" + ROLES % "m"
    assert load_config(write(tmp_path, base)).fingerprint() != load_config(write(tmp_path, changed)).fingerprint()


def test_embedded_model_resolves_to_the_prepared_folder_or_says_how_to_prepare(tmp_path, monkeypatch):
    assert resolve_model_path("/models/llama") == "/models/llama"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(ModelError, match="apigen-mt models prepare"):
        resolve_model_path("embedded:smollm2-135m-instruct")
    with pytest.raises(ConfigError, match="unknown embedded model 'gpt-9'"):
        resolve_model_path("embedded:gpt-9")


def test_an_endpoint_model_shared_by_roles_is_one_client_without_ray(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    config = load_config(CONFIGS / "openai-endpoint.yaml")
    engines = Engines.start(config, ("agent", "human"))  # no ray.init(): an endpoint needs no cluster
    (client,) = engines.model("agent").replicas
    assert engines.model("human") is engines.model("agent")
    assert isinstance(client, OpenAIChatModel) and client.model_id == "Salesforce/Llama-xLAM-2-8b-fc-r"
    asyncio.run(client.aclose())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "critic"], "unknown role 'critic'"),
        (["--tools", "get_order_details,fly"], "--tools: retail has no tool fly"),
        (["--domain", "bank"], "unknown domain 'bank'"),
    ],
)
def test_models_ask_refuses_bad_input_before_starting_anything(args, message):
    from typer.testing import CliRunner

    from apigen_mt.pipeline import cli_models  # noqa: F401  (registers `models`)
    from apigen_mt.pipeline.cli import CliError, app

    result = CliRunner().invoke(app, ["models", "ask", str(CONFIGS / "local-cpu.yaml"), "hello", *args])
    assert isinstance(result.exception, CliError)
    assert message in str(result.exception)


def test_models_ask_names_a_broken_config(tmp_path):
    from typer.testing import CliRunner

    from apigen_mt.pipeline import cli_models  # noqa: F401
    from apigen_mt.pipeline.cli import CliError, app

    result = CliRunner().invoke(app, ["models", "ask", str(write(tmp_path, "models: [")), "hello"])
    assert isinstance(result.exception, CliError) and "is not valid YAML" in str(result.exception)


def test_resuming_on_a_larger_cluster_keeps_the_fingerprint(tmp_path):
    base = yaml.safe_load((CONFIGS / "local-cpu.yaml").read_text())
    scaled = copy.deepcopy(base)
    scaled["trajectories"].update(workers=4, in_flight=256, rows_per_shard=512, max_attempts=5)
    for spec in scaled["models"].values():
        spec["replicas"] = 8
        spec["engine"].update(max_num_seqs=256, tensor_parallel_size=2, gpu_memory_utilization=0.5)
    changed = copy.deepcopy(base)
    changed["trajectories"]["episode"]["max_turns"] += 1

    def fingerprint(data: dict) -> str:
        return load_config(write(tmp_path, yaml.safe_dump(data))).fingerprint()

    assert fingerprint(base) == fingerprint(scaled) != fingerprint(changed)


def test_a_committee_of_several_reviewer_models(tmp_path):
    from apigen_mt.blueprints.review import ReviewSettings, review
    from apigen_mt.pipeline.run import _phase1_models
    from apigen_mt.pipeline.scripted import ScriptedChatModel
    from apigen_mt.simulators.types import Blueprint, ToolCall

    models = "models: {a: {backend: vllm, engine: {model: x}}, b: {backend: vllm, engine: {model: y}}}\n"
    single = load_config(write(tmp_path, models + "roles: {proposer: a, reviewer: a, human: a, human_judge: a, agent: a}\n"))
    committee = load_config(write(tmp_path, models + "roles: {proposer: a, reviewer: [a, b], human: a, human_judge: a, agent: a}\n"))
    assert single.roles.models_of("reviewer") == ["a"] and committee.roles.models_of("reviewer") == ["a", "b"]
    assert single.fingerprint() != committee.fingerprint()
    for text, message in [
        (models + "roles: {proposer: a, reviewer: [a, c], human: a, human_judge: a, agent: a}\n", "roles.reviewer names model 'c'"),
        (models + "roles: {proposer: a, reviewer: [], human: a, human_judge: a, agent: a}\n", "name at least one model"),
    ]:
        with pytest.raises(ConfigError, match="run.yaml") as caught:
            load_config(write(tmp_path, text))
        assert message in str(caught.value)

    vote = '{"reflection": "ok", "correctness": 1, "completeness": 1, "satisfaction": 1, "creativity": 1}'
    engines = Engines.start(committee, ("proposer", "reviewer"), factory=lambda name: ScriptedChatModel(lambda request: vote, model_id=name))
    phase1 = _phase1_models(engines)
    assert [model.model_id for model in phase1.reviewers] == ["a", "b"] and phase1.summariser.model_id == "a"
    task = Blueprint(instruction="x", actions=[ToolCall(name="think", arguments={"thought": "x"})])
    verdict = asyncio.run(review(phase1.reviewers, task, [], "policy", ReviewSettings(reviewers=3)))
    assert [ballot.model_id for ballot in verdict.ballots] == ["a", "b", "a"] and verdict.passed


def test_the_real_model_configs_decode_freely_and_the_embedded_one_under_its_grammar():
    """Defaults for real models are never chosen for the embedded one: only local-cpu.yaml constrains the agent
    and compacts JSON grammars."""
    for name in ("gpu-cluster.yaml", "openai-endpoint.yaml", "xlam-teacher.yaml"):
        config = load_config(CONFIGS / name)
        assert not config.trajectories.agent.constrained, name
        engines = [spec.engine for spec in config.models.values() if isinstance(spec, VllmModel)]
        assert not any(engine.compact_json or engine.tool_parser for engine in engines), name
    two = load_config(CONFIGS / "xlam-teacher.yaml")
    assert isinstance(two.models[two.roles.agent], VllmModel) and "xLAM-2" in two.models[two.roles.agent].engine.model
    assert {two.roles.models_of(role)[0] for role in ("proposer", "reviewer", "human", "human_judge")} == {"teacher"}
    embedded = load_config(CONFIGS / "local-cpu.yaml")
    assert embedded.trajectories.agent.constrained and embedded.models["smollm2"].engine.compact_json
