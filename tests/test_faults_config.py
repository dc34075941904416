"""Issue 18, classes 6, 7 and 12c: a config holding a number no run can hold, a YAML alias bomb, or true/false
where a number belongs is refused in one line naming the field (exit 2) before anything starts, and a finished
run folder stays as it was. The commands are the installed console script against the loopback endpoint (a
test double of an OpenAI-compatible server, tests/loopback_endpoint.py); the in-process tests go through every
field of the config models.
"""

from __future__ import annotations

import copy
import json
import re
import resource
import subprocess
import sys
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pyarrow.parquet as pq
import pytest
import yaml
from annotated_types import Le

from apigen_mt.pipeline.config import ConfigError, RunConfig, VllmModel, concurrency, load_config
from apigen_mt.pipeline.config_phases import MAX_TRIALS
from apigen_mt.pipeline.config_reference import sections
from apigen_mt.pipeline.config_values import MAX_CONFIG_CHARS
from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
from apigen_mt.pipeline.engines.vllm_config import MAX_IN_FLIGHT, VllmEngineConfig
from tests.conftest import load_test_module

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).parent / "apigen-mt"
DEMO_BLUEPRINTS = HERE.parent / "examples" / "demo_blueprints.jsonl"
TASKS = 2
# Ray takes an actor's max_concurrency as a signed 32-bit number.
RAY_INT32 = 2**31 - 1


loopback = load_test_module("loopback_endpoint")


def run_cli(*args: Any, memory: int | None = None) -> subprocess.CompletedProcess[str]:
    """`apigen-mt ARGS`; with `memory`, in at most that many bytes of address space."""

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=120, preexec_fn=limit)


def endpoint_config(base_url: str, in_flight: int) -> str:
    config = {
        "models": {"hosted": {"backend": "openai", "endpoint": {"base_url": base_url, "model": "teacher"}}},
        "roles": {"human": "hosted", "agent": "hosted"},
        "trajectories": {"trials": 1, "in_flight": in_flight, "episode": {"max_turns": 10}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def trajectories(config: Path, output: Path, memory: int | None = None) -> subprocess.CompletedProcess[str]:
    tasks = ("--tasks", DEMO_BLUEPRINTS, "--domain", "retail", "--limit", TASKS)
    return run_cli("trajectories", config, *tasks, "--output", output, "--quiet", memory=memory)


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, str]:
    """A run folder whose trajectories run finished, and the config text that made it. It kept the largest
    number of episodes in flight a config may ask for: the bound is what a run can hold."""
    folder = tmp_path_factory.mktemp("finished")
    with loopback.LoopbackEndpoint(models=("teacher",)) as endpoint:
        text = endpoint_config(endpoint.base_url, in_flight=MAX_IN_FLIGHT)
        (folder / "run.yaml").write_text(text)
        result = trajectories(folder / "run.yaml", folder / "run")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((folder / "run" / "manifest.json").read_text())
    assert manifest["finished_at"] is not None and manifest["config"]["trajectories"]["in_flight"] == MAX_IN_FLIGHT
    return folder, text


def assert_one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("apigen-mt: error: ")
    return line


def refused_rerun(finished_run: tuple[Path, str], text: str) -> str:
    """Resume the finished run with the config `text`; it must be refused in one line and leave the run folder's
    rows and manifest as they were. Returns the line."""
    folder, _ = finished_run
    before = files(folder / "run")
    (folder / "hostile.yaml").write_text(text)
    line = assert_one_line(trajectories(folder / "hostile.yaml", folder / "run"))
    assert "hostile.yaml" in line
    assert files(folder / "run") == before
    [shard] = (folder / "run" / "trajectories").glob("part-*.parquet")
    assert pq.read_table(shard).num_rows == TASKS
    manifest = json.loads((folder / "run" / "manifest.json").read_text())
    assert manifest["finished_at"] is not None and manifest["counts"]["trajectories"]["trials"] == TASKS
    return line


def with_setting(text: str, path: str, value: Any) -> str:
    config = yaml.safe_load(text)
    *parents, name = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    return yaml.safe_dump(config, sort_keys=False)


@pytest.mark.parametrize(
    ("path", "value", "bound"),
    [
        ("trajectories.in_flight", 10**18, MAX_IN_FLIGHT),
        ("trajectories.trials", 10**30, MAX_TRIALS),
        ("models.hosted.endpoint.max_concurrency", 10**18, MAX_IN_FLIGHT),
    ],
)
def test_a_count_beyond_what_a_run_can_hold_is_one_line_naming_the_field_and_its_bound(
    finished_run, path, value, bound
):
    """issue 18 class 6: Ray's int32 overflow traceback (in flight, concurrency), a MemoryError (trials). Every
    other count is bounded too: test_a_bound_is_taken_and_one_past_it_is_refused_naming_the_field_and_the_bound."""
    line = refused_rerun(finished_run, with_setting(finished_run[1], path, value))
    field = path.replace("models.hosted.", "models.hosted.openai.")  # pydantic names the model's backend too
    assert f"{field}: Input should be less than or equal to {bound}" in line


def test_a_number_too_long_to_read_is_one_line(finished_run):
    """issue 18 class 6: YAML made a ValueError traceback of an int past Python's 4300 digits."""
    text = finished_run[1].replace("trials: 1", "trials: " + "9" * 5000)
    line = refused_rerun(finished_run, text)
    assert "holds a value that cannot be read: Exceeds the limit (4300 digits)" in line


BOMB_CONFIG = """\
models:
  hosted: {backend: openai, endpoint: {base_url: "http://127.0.0.1:9/v1", model: teacher}}
  spare:
    backend: vllm
    engine:
      model: unused
      %s:
%s
roles: {human: hosted, agent: hosted}
"""


def entries(*lines: str) -> str:
    """Lines of a mapping, indented for BOMB_CONFIG's free-form field."""
    return "\n".join(f"        {line}" for line in lines)


def alias_bomb(levels: int) -> str:
    """Entries each a list of ten aliases of the one before: 10^levels lists of ten strings, expanded."""
    first = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    return entries(first, *(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels + 1)))


@pytest.mark.parametrize(("field", "levels"), [("engine_kwargs", 6), ("engine_kwargs", 9), ("chat_template_kwargs", 9)])
def test_an_alias_bomb_in_an_unused_models_free_form_field_is_refused_before_it_expands(tmp_path, field, levels):
    """issue 18 class 7. Expanded, six levels wrote a 40 MB manifest and nine took 4 GB: each shared value is
    measured once, so the refusal fits in the memory of any refused command (1 GiB of address space here)."""
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB_CONFIG % (field, alias_bomb(levels)))
    line = assert_one_line(trajectories(config, tmp_path / "run", memory=2**30))
    assert f"bomb.yaml: models.spare.engine.{field}.l{levels} is about " in line
    assert (
        f"characters as JSON once its YAML aliases are expanded; a run config holds at most {MAX_CONFIG_CHARS:,}"
        in line
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("lines", "wording"),
    [
        (["loop: &loop [1, *loop]"], "models.spare.engine.engine_kwargs.loop contains itself"),
        (["deep: " + "[" * 100_000 + "]" * 100_000], "nests lists or mappings too deeply to read"),
    ],
)
def test_a_value_without_end_is_one_line(tmp_path, lines, wording):
    """issue 18 class 7: a value that contains itself (nothing can write it out), or nests deeper than YAML's reader
    can go (a RecursionError traceback before), is refused as a bomb is."""
    config = tmp_path / "endless.yaml"
    config.write_text(BOMB_CONFIG % ("engine_kwargs", entries(*lines)))
    line = assert_one_line(trajectories(config, tmp_path / "run"))
    assert "endless.yaml" in line and wording in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("path", "value", "wording"),
    [
        ("trajectories.trials", True, "trajectories.trials: Input should be a valid integer"),
        ("trajectories.agent.temperature", False, "trajectories.agent.temperature: Input should be a valid number"),
    ],
)
def test_true_or_false_is_not_taken_for_a_number(finished_run, path, value, wording):
    """issue 18 class 12c: `trials: true` was taken as 1. Every number field: test_every_number_field_refuses_true."""
    line = refused_rerun(finished_run, with_setting(finished_run[1], path, value))
    assert wording in line


# --- every field of the config models, in process ---------------------------------------------------------

BASE = {
    "models": {
        "v": {"backend": "vllm", "engine": {"model": "m"}},
        "o": {"backend": "openai", "endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
    },
    "roles": {"proposer": "v", "reviewer": "v", "human": "o", "agent": "o"},
    "tasks": [{"domain": "retail", "path": "examples:retail"}],
    "blueprint_generation": {"domains": [{"domain": "retail", "proposals": 1}]},
}
# Int fields that only cap what a run takes (more than there is takes all of it), or seed a hash of any size.
CAPS = {"tasks.0.limit", "blueprint_generation.recombination.limit", "blueprint_generation.seed"}


def place_of(title: str) -> tuple[str, str]:
    """A reference section's place in BASE, and the place pydantic names (with the model's backend in it)."""
    path, _, label = title.partition(" (")
    path = "" if path == "top level" else path.replace("[]", ".0")
    if "NAME" not in path:
        return path, path
    name, backend = {"backend: vllm)": ("v", "vllm"), "backend: openai)": ("o", "openai")}[label]
    return path.replace("NAME", name), path.replace("NAME", f"{name}.{backend}")


def numeric_fields() -> list[tuple[str, str, type, Any]]:
    """(dotted place in BASE, dotted place pydantic names, int or float, the field) of every number field."""
    found = []
    for title, model, _ in sections(RunConfig, "", "", None):
        place, named = place_of(title)
        for name, field in model.model_fields.items():
            # An int or a float, or either or null; not a tuple of them.
            union = get_origin(field.annotation) in (Union, UnionType)
            kinds = set(get_args(field.annotation)) if union else {field.annotation}
            kind = int if int in kinds else float if float in kinds else None
            if kind is not None:
                found.append((f"{place}.{name}".lstrip("."), f"{named}.{name}".lstrip("."), kind, field))
    return found


NUMERIC = numeric_fields()


def load_with(tmp_path: Path, place: str, value: Any) -> RunConfig:
    config = copy.deepcopy(BASE)
    *parents, name = place.split(".")
    node: Any = config
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[name] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def test_the_walk_finds_the_number_fields_of_every_section():
    places = {place for place, *_ in NUMERIC}
    assert {"trajectories.trials", "models.v.engine.max_num_seqs", "models.o.endpoint.max_concurrency"} <= places
    assert {"trajectories.episode.max_turns", "blueprint_generation.sampler.examples", "tasks.0.limit"} <= places
    assert len(places) == len(NUMERIC) > 40


@pytest.mark.parametrize(("place", "named", "kind", "field"), NUMERIC, ids=[place for place, *_ in NUMERIC])
def test_every_number_field_refuses_true_naming_itself(tmp_path, place, named, kind, field):
    """issue 18 class 12c, for every number field a config has."""
    expected = "a valid integer" if kind is int else "a valid number"
    with pytest.raises(ConfigError, match=f"run.yaml: {re.escape(named)}: Input should be {expected}$"):
        load_with(tmp_path, place, True)


@pytest.mark.parametrize(
    ("place", "value", "wording"),
    [
        ("trajectories.workers", "2", "trajectories.workers: Input should be a valid integer"),
        ("trajectories.episode.max_turns", 30.0, "trajectories.episode.max_turns: Input should be a valid integer"),
        ("trajectories.agent.max_tokens", 1.5, "trajectories.agent.max_tokens: Input should be a valid integer"),
        ("trajectories.agent.temperature", "0.5", "trajectories.agent.temperature: Input should be a valid number"),
    ],
)
def test_quoted_digits_or_a_fraction_are_not_taken_for_a_count(tmp_path, place, value, wording):
    """issue 18 class 12c: pydantic's lax reading took "2" for 2 and 30.0 for 30 as it took true for 1."""
    with pytest.raises(ConfigError, match=re.escape(wording)):
        load_with(tmp_path, place, value)


@pytest.mark.parametrize(
    ("text", "wording"),
    [
        ("seed: 2024-01-01", "blueprint_generation.seed: YAML reads this as a date, which a config cannot hold"),
        ("sampler: {on: 1}", "blueprint_generation.sampler: the key True is not text; quote it"),
        ("dedup_threshold: .nan", "blueprint_generation.dedup_threshold: nan is not a number a run can use"),
        ("sampler: {policy_frequency: -.inf}", "sampler.policy_frequency: -inf is not a number a run can use"),
        ("sampler: &s {examples: *s}", "blueprint_generation.sampler contains itself"),
        (
            "n0: &n0 [1]\n" + "".join(f"  n{n}: &n{n} [*n{n - 1}]\n" for n in range(1, 150)),
            "blueprint_generation.n98.0 nests more than 100 levels",  # the first alias reaching past them
        ),
    ],
)
def test_what_json_cannot_hold_is_refused_naming_where(tmp_path, text, wording):
    """issue 18 class 7 (and what the manifest, strict JSON, could not hold): each refused in one line."""
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({key: BASE[key] for key in ("models", "roles")}) + f"blueprint_generation:\n  {text}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(wording)) as refused:
        load_config(config)
    assert len(str(refused.value).splitlines()) == 1


def upper_bound(field: Any) -> int | float | None:
    return next((item.le for item in field.metadata if isinstance(item, Le)), None)


def test_every_count_has_an_upper_bound():
    """issue 18 class 6: an int field without one is a cap or a seed of a hash, or it is missing its bound."""
    unbounded = [place for place, _, kind, field in NUMERIC if kind is int and upper_bound(field) is None]
    assert sorted(unbounded) == sorted(CAPS)


BOUNDED = [
    (place, named, upper_bound(field)) for place, named, kind, field in NUMERIC if upper_bound(field) is not None
]


@pytest.mark.parametrize(("place", "named", "bound"), BOUNDED, ids=[place for place, *_ in BOUNDED])
def test_a_bound_is_taken_and_one_past_it_is_refused_naming_the_field_and_the_bound(tmp_path, place, named, bound):
    """issue 18 class 6, for every bounded number field."""
    load_with(tmp_path, place, bound)
    past = bound + 1 if isinstance(bound, int) else bound * 2
    stated = f"{bound:g}" if isinstance(bound, float) else str(bound)  # pydantic's way: 1.0 is "1"
    with pytest.raises(ConfigError, match=f"{re.escape(named)}: Input should be less than or equal to {stated}$"):
        load_with(tmp_path, place, past)


def test_the_largest_concurrency_a_config_can_ask_for_fits_ray_s_32_bit_counts():
    """issue 18 class 6: Ray overflowed on max_concurrency of 10^18; every figure `concurrency` derives from the
    largest settings still fits, whichever setting drives it."""
    vllm_fields, endpoint_fields = VllmEngineConfig.model_fields, OpenAIBackendConfig.model_fields
    replicas = upper_bound(VllmModel.model_fields["replicas"])
    engines = [
        VllmEngineConfig(model="m", max_num_seqs=upper_bound(vllm_fields["max_num_seqs"])),
        VllmEngineConfig(model="m", max_in_flight=upper_bound(vllm_fields["max_in_flight"])),
        OpenAIBackendConfig(
            base_url="http://x", model="m", max_concurrency=upper_bound(endpoint_fields["max_concurrency"])
        ),
    ]
    for engine in engines:
        for in_flight in (None, MAX_IN_FLIGHT):
            figures = concurrency(engine, replicas=replicas, in_flight=in_flight, workers=1)
            assert max(figures.client, figures.engine_actor or 0, figures.in_flight, figures.per_worker) <= RAY_INT32


def test_max_replays_leaves_the_fingerprint_as_it_was(tmp_path):
    """A setting of how a rerun retries changes no data made, so a run folder resumes across it."""
    default = load_with(tmp_path, "trajectories.trials", 3).fingerprint()
    assert load_with(tmp_path, "trajectories.max_replays", 0).fingerprint() == default
    assert load_with(tmp_path, "trajectories.max_replays", 100).fingerprint() == default


def test_aliases_that_share_a_value_within_the_bound_still_load(tmp_path):
    """Aliases are YAML's way to share settings; only what expands past the bound is refused."""
    config = tmp_path / "shared.yaml"
    config.write_text(BOMB_CONFIG % ("engine_kwargs", alias_bomb(4)))
    loaded = load_config(config)
    assert len(json.dumps(loaded.models["spare"].engine.engine_kwargs)) < MAX_CONFIG_CHARS
