"""Run configs: the shipped ones load, bad ones say where they are wrong, `embedded:` resolves locally."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apigen_mt.pipeline.config import ConfigError, VllmModel, concurrency, load_config, resolve_model_path
from apigen_mt.pipeline.engines.local_models import CACHE_ENV, ModelError
from apigen_mt.pipeline.engines.openai_backend import OpenAIChatModel
from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
from apigen_mt.pipeline.engines.pool import Engines
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEMO_BLUEPRINTS = ROOT / "examples" / "demo_blueprints.jsonl"
CLI = Path(sys.executable).parent / "apigen-mt"


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
        (
            "models: {m: {backend: vllm, engine: {model: x, gpu_memory_utilization: 2}}}\n" + ROLES % "m",
            "gpu_memory_utilization",
        ),
        (
            "models: {m: {backend: openai, endpoint: {base_url: localhost, model: x}}}\n" + ROLES % "m",
            "base_url must start with http",
        ),
        (
            "models: {m: {backend: vllm, engine: {model: x}}}\n" + ROLES % "m" + "extra: 1\n",
            "extra: Extra inputs are not permitted",
        ),
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

    from apigen_mt.pipeline.cli import models as cli_models  # noqa: F401  (registers `models`)
    from apigen_mt.pipeline.cli.main import CliError, app

    result = CliRunner().invoke(app, ["models", "ask", str(CONFIGS / "local-cpu.yaml"), "hello", *args])
    assert isinstance(result.exception, CliError)
    assert message in str(result.exception)


def test_models_ask_names_a_broken_config(tmp_path):
    from typer.testing import CliRunner

    from apigen_mt.pipeline.cli import models as cli_models  # noqa: F401
    from apigen_mt.pipeline.cli.main import CliError, app

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
    from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
    from apigen_mt.pipeline.run.phase1 import _phase1_models
    from apigen_mt.simulators.types import Blueprint, ToolCall

    models = "models: {a: {backend: vllm, engine: {model: x}}, b: {backend: vllm, engine: {model: y}}}\n"
    single = load_config(
        write(tmp_path, models + "roles: {proposer: a, reviewer: a, human: a, human_judge: a, agent: a}\n")
    )
    committee = load_config(
        write(tmp_path, models + "roles: {proposer: a, reviewer: [a, b], human: a, human_judge: a, agent: a}\n")
    )
    assert single.roles.models_of("reviewer") == ["a"] and committee.roles.models_of("reviewer") == ["a", "b"]
    assert single.fingerprint() != committee.fingerprint()
    for text, message in [
        (
            models + "roles: {proposer: a, reviewer: [a, c], human: a, human_judge: a, agent: a}\n",
            "roles.reviewer names model 'c'",
        ),
        (
            models + "roles: {proposer: a, reviewer: [], human: a, human_judge: a, agent: a}\n",
            "name at least one model",
        ),
    ]:
        with pytest.raises(ConfigError, match="run.yaml") as caught:
            load_config(write(tmp_path, text))
        assert message in str(caught.value)

    vote = '{"reflection": "ok", "correctness": 1, "completeness": 1, "satisfaction": 1, "creativity": 1}'
    engines = Engines.start(
        committee, ("proposer", "reviewer"), factory=lambda name: ScriptedChatModel(lambda request: vote, model_id=name)
    )
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


# --- fingerprints of the shipped configs --------------------------------------------------------------------

# What they were before the configs were trimmed to what a user changes and the roles became optional: a changed
# fingerprint would refuse to resume every run made with them.
SHIPPED_FINGERPRINTS = {
    "local-cpu.yaml": "961350fd7c6bac0dc150b1f0f1d905f04641996b142db62f6cd5ed985fa98142",
    "gpu-cluster.yaml": "f99cb98f252ce625d0cf2ac9f036c6e51c0ae74f99b82da815459c39a52429fd",
    "openai-endpoint.yaml": "65c407d044a207bbd8fadf7d640ac6d3f504494f6e8016e5d7afcf1b9a57b150",
    "xlam-teacher.yaml": "0e8c935f509bc28250d158b70b9a65347a3df06b8204e29bbf8ddd2f53b08637",
}


@pytest.mark.parametrize("name", sorted(SHIPPED_FINGERPRINTS))
def test_shipped_configs_keep_the_fingerprints_of_their_runs(name):
    assert load_config(CONFIGS / name).fingerprint() == SHIPPED_FINGERPRINTS[name]


@pytest.mark.parametrize("name", sorted(SHIPPED_FINGERPRINTS))
def test_shipped_configs_write_only_what_differs_from_the_defaults(tmp_path, name):
    """Leaving out any setting a shipped config writes changes the config it loads as (or makes it invalid):
    none restates a default, so a config shows only what a user changes."""
    raw = yaml.safe_load((CONFIGS / name).read_text())
    meaning = load_config(CONFIGS / name).model_dump(mode="json")

    def leaves(node: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        found = []
        for key, value in node.items():
            found += leaves(value, (*path, key)) if isinstance(value, dict) else [(*path, key)]
        return found

    restated = []
    for leaf in leaves(raw):
        trimmed = copy.deepcopy(raw)
        parent = trimmed
        for key in leaf[:-1]:
            parent = parent[key]
        del parent[leaf[-1]]
        try:
            same = load_config(write(tmp_path, yaml.safe_dump(trimmed))).model_dump(mode="json") == meaning
        except ConfigError:
            same = False  # a required setting
        if same:
            restated.append(".".join(leaf))
    assert restated == []


def test_shipped_configs_leave_the_human_judge_to_the_human():
    for name in SHIPPED_FINGERPRINTS:
        config = load_config(CONFIGS / name)
        assert "human_judge" not in yaml.safe_load((CONFIGS / name).read_text())["roles"]
        assert config.roles.human_judge == config.roles.human, name


# --- optional roles -------------------------------------------------------------------------------------------

PHASE2_ONLY = """\
models: {m: {backend: vllm, engine: {model: x}}}
roles: {agent: m, human: m}
tasks: [{domain: retail, path: "examples:retail"}]
"""


def test_a_phase_2_config_names_only_the_agent_and_the_human(tmp_path):
    config = load_config(write(tmp_path, PHASE2_ONLY))
    assert config.roles.models_of("human_judge") == ["m"]  # the human's model judges its candidates
    for role in ("proposer", "reviewer"):
        with pytest.raises(ConfigError, match=rf"roles\.{role} is not set, and Phase 1 \(`apigen-mt blueprints`"):
            config.roles.models_of(role)


def test_a_phase_1_config_names_only_the_proposer_and_the_reviewer(tmp_path):
    text = "models: {m: {backend: vllm, engine: {model: x}}}\nroles: {proposer: m, reviewer: [m]}\n"
    config = load_config(write(tmp_path, text + "blueprint_generation: {domains: [{domain: retail, proposals: 2}]}\n"))
    assert config.roles.models_of("reviewer") == ["m"] and config.roles.human_judge is None
    with pytest.raises(ConfigError, match=r"roles\.agent is not set, and Phase 2 \(`apigen-mt trajectories` and `gen"):
        config.roles.models_of("agent")


def test_leaving_out_the_human_judge_is_naming_the_human_model(tmp_path):
    models = "models: {a: {backend: vllm, engine: {model: x}}, b: {backend: vllm, engine: {model: y}}}\n"
    implicit = load_config(write(tmp_path, models + "roles: {agent: a, human: b}\n"))
    explicit = load_config(write(tmp_path, models + "roles: {agent: a, human: b, human_judge: b}\n"))
    other = load_config(write(tmp_path, models + "roles: {agent: a, human: b, human_judge: a}\n"))
    assert implicit.fingerprint() == explicit.fingerprint() != other.fingerprint()
    assert other.roles.models_of("human_judge") == ["a"]


def test_a_run_missing_a_role_stops_before_anything_starts(tmp_path):
    """The Python entry points check the roles first: no Ray, no manifest."""
    import ray

    from apigen_mt.pipeline.run.driver import RunOptions, run_blueprints, run_trajectories
    from apigen_mt.pipeline.run.phase1 import ProposalPlan
    from apigen_mt.pipeline.run.sources import load_source
    from apigen_mt.pipeline.store.run_folder import RunFolder

    config = load_config(write(tmp_path, PHASE2_ONLY.replace("agent: m, ", "")))
    source = load_source("retail", DEMO_BLUEPRINTS)
    options = RunOptions(RunFolder(tmp_path / "run"), progress=False)

    def no_model(name: str):
        pytest.fail(f"model {name} was made")

    with pytest.raises(ConfigError, match=r"roles\.agent is not set"):
        run_trajectories(config, [source], options, model_factory=no_model)
    with pytest.raises(ConfigError, match=r"roles\.proposer is not set"):
        run_blueprints(config, ProposalPlan((), ()), options, model_factory=no_model)
    assert not ray.is_initialized() and not (tmp_path / "run" / "manifest.json").exists()


PHASE_1, PHASE_2 = "Phase 1 (`apigen-mt blueprints`", "Phase 2 (`apigen-mt trajectories`"


@pytest.mark.parametrize(
    ("command", "roles", "missing"),
    [
        ("trajectories", "{proposer: m, reviewer: m, human: m}", f"roles.agent is not set, and {PHASE_2}"),
        ("blueprints", "{agent: m, human: m}", f"roles.proposer is not set, and {PHASE_1}"),
        ("generate", "{agent: m, human: m, reviewer: m}", f"roles.proposer is not set, and {PHASE_1}"),
    ],
)
def test_the_cli_names_the_missing_role_in_one_line(tmp_path, command, roles, missing):
    config = write(
        tmp_path,
        "models: {m: {backend: vllm, engine: {model: embedded:smollm2-135m-instruct, device: cpu}}}\n"
        f"roles: {roles}\ntasks: [{{domain: retail, path: {DEMO_BLUEPRINTS}}}]\n"
        "blueprint_generation: {domains: [{domain: retail, proposals: 2}]}\n",
    )
    extra = ["--tasks", str(DEMO_BLUEPRINTS)] if command == "trajectories" else []
    arguments = [str(CLI), command, str(config), *extra, "--output", str(tmp_path / "run")]
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and missing in result.stderr, result.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_phase_2_only_config_plays_its_blueprints(tmp_path):
    """Phase 2 on Ray with scripted roles (tests/scripted_job.py, test doubles) from a config naming only the agent
    and the human."""
    import ray

    from apigen_mt.pipeline.run.driver import RunOptions, run_trajectories
    from apigen_mt.pipeline.run.sources import load_source
    from apigen_mt.pipeline.store.run_folder import RunFolder
    from tests.conftest import load_by_value

    job = load_by_value("scripted_job")
    raw = yaml.safe_load((CONFIGS / "local-cpu.yaml").read_text())
    raw["roles"] = {"agent": "smollm2", "human": "smollm2"}
    del raw["blueprint_generation"], raw["tasks"]
    raw["trajectories"]["human"]["structured"] = False  # the scripted human answers in plain text
    config = load_config(write(tmp_path, yaml.safe_dump(raw)))
    source = load_source("retail", DEMO_BLUEPRINTS)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        options = RunOptions(RunFolder(tmp_path / "run"), trials=1, progress=False)
        summary = run_trajectories(config, [source], options, model_factory=job.factory(0.0))
    finally:
        ray.shutdown()
    assert summary.counts["trajectories"]["trials"] == len(source.blueprints) == 5
    assert summary.counts["trajectories"]["accepted"] == 3  # the scripted agent's three right blueprints


# --- concurrency ----------------------------------------------------------------------------------------------

URL = "http://127.0.0.1:8000/v1"


# Each figure as the driver and the engines had it before `concurrency` gathered them: a phase's bound was its
# in_flight, else replicas x the engine's in_flight_limit (or the endpoint's max_concurrency); a worker took
# ceil(bound / workers) + 8; an engine actor max(1000, 4 x in_flight_limit).
@pytest.mark.parametrize(
    ("engine", "settings", "figures"),
    [
        (VllmEngineConfig(model="m"), {}, (128, 1000, 128, 136)),
        (VllmEngineConfig(model="m", max_num_seqs=16), {"replicas": 3, "workers": 2}, (32, 1000, 96, 56)),
        (VllmEngineConfig(model="m", max_in_flight=300), {"replicas": 2, "workers": 3}, (300, 1200, 600, 208)),
        (VllmEngineConfig(model="m", max_num_seqs=512), {"in_flight": 50, "workers": 3}, (1024, 4096, 50, 25)),
        (OpenAIBackendConfig(base_url=URL, model="m", max_concurrency=32), {"workers": 4}, (32, None, 32, 16)),
        (OpenAIBackendConfig(base_url=URL, model="m"), {"in_flight": 5}, (16, None, 5, 13)),
    ],
)
def test_concurrency_figures_are_the_ones_the_run_had(engine, settings, figures):
    got = concurrency(engine, **settings)
    assert (got.client, got.engine_actor, got.in_flight, got.per_worker) == figures


@pytest.mark.parametrize(
    ("name", "trajectories", "blueprints"),
    [
        ("local-cpu.yaml", (32, 40), (32, 40)),  # 16 seqs x 2
        ("gpu-cluster.yaml", (512, 136), (512, 136)),  # 2 replicas x 128 seqs x 2, over 4 workers
        ("openai-endpoint.yaml", (32, 40), (32, 40)),  # the endpoint's max_concurrency
        ("xlam-teacher.yaml", (128, 136), (32, 40)),  # the agent's engine, the teacher's endpoint
    ],
)
def test_each_phase_takes_its_figures_from_the_model_that_drives_it(name, trajectories, blueprints):
    config = load_config(CONFIGS / name)
    for phase, expected in (("trajectories", trajectories), ("blueprints", blueprints)):
        figures = config.phase_concurrency(phase)
        assert (figures.in_flight, figures.per_worker) == expected, phase


def test_a_phase_s_in_flight_overrides_the_model_s_and_phase_1_needs_its_section(tmp_path):
    text = "models: {a: {backend: vllm, engine: {model: x, max_num_seqs: 4}}}\nroles: {agent: a, human: a}\n"
    config = load_config(write(tmp_path, text + "trajectories: {in_flight: 7, workers: 2}\n"))
    figures = config.phase_concurrency("trajectories")
    assert (figures.in_flight, figures.per_worker) == (7, 12)
    with pytest.raises(ConfigError, match="blueprint_generation section"):
        config.phase_concurrency("blueprints")
