"""Choosing the tool-call parser from a model folder (its chat template and architecture), and refusing a
configured parser that contradicts the template: on synthetic model folders made from the real templates in
../shared/chat-templates, before Ray starts and through the CLI's exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from apigen_mt.pipeline.config import ROLES, ConfigError, RunConfig
from apigen_mt.pipeline.engines.model_family import (
    ModelFamilyError,
    chosen_tool_parser,
    family_of_folder,
    family_of_template,
    read_chat_template,
    tool_template,
)
from apigen_mt.pipeline.engines.pool import preflight
from apigen_mt.pipeline.engines.tiny_test_model import CHAT_TEMPLATE as TINY_TEMPLATE
from apigen_mt.simulators.tool_parsers import parser_names
from tests.conftest import cli_error_line

CHAT_TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "chat-templates"

# The four shared templates and the parser vLLM pairs each with (../shared/chat-templates/README.md).
SHARED_FAMILIES = {
    "xlam_llama.jinja": ("xlam", "LlamaForCausalLM", "llama"),
    "xlam_qwen.jinja": ("xlam", "Qwen2ForCausalLM", "qwen2"),
    "hermes.jinja": ("hermes", "Qwen2ForCausalLM", "qwen2"),
    "llama3.1_json.jinja": ("llama3_json", "LlamaForCausalLM", "llama"),
}

# Mistral's tool template in brief: the tools after [AVAILABLE_TOOLS], calls written after [TOOL_CALLS].
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message.role == 'user' %}{% if tools and loop.last %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]"
    "{% endif %}[INST]{{ message.content }}[/INST]"
    "{% elif message.tool_calls %}[TOOL_CALLS]{{ message.tool_calls | map(attribute='function') | list | tojson }}"
    "{{ eos_token }}{% else %}{{ message.content }}{{ eos_token }}{% endif %}{% endfor %}"
)

# SmolLM2-Instruct's ChatML: no tools at all.
CHATML_WITHOUT_TOOLS = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def templates() -> Path:
    if not all((CHAT_TEMPLATES / name).is_file() for name in SHARED_FAMILIES):
        pytest.skip(f"shared chat templates not found at {CHAT_TEMPLATES} (expected ../shared/chat-templates)")
    return CHAT_TEMPLATES


def model_folder(
    path: Path, template, *, architecture="LlamaForCausalLM", model_type="llama", where="tokenizer_config"
) -> Path:
    """A model folder as far as the family check reads it: config.json and the chat template in one of its homes."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": model_type}))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if where == "tokenizer_config" and template is not None:
        tokenizer_config["chat_template"] = template
    elif where == "jinja":
        (path / "chat_template.jinja").write_text(template)
    elif where == "processor":
        (path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


# --------------------------------------------------------------------------------------------- choice


@pytest.mark.parametrize("where", ["tokenizer_config", "jinja", "processor"])
def test_each_shared_template_names_the_parser_vllm_pairs_it_with(templates, tmp_path, where):
    for name, (parser, architecture, model_type) in SHARED_FAMILIES.items():
        folder = model_folder(
            tmp_path / name,
            (templates / name).read_text(),
            architecture=architecture,
            model_type=model_type,
            where=where,
        )
        family = family_of_folder(folder)
        assert (family.parser, family.recognised, family.takes_tools) == (parser, True, True), name
    # Llama 3.1's template refuses several calls in one message; the others take them.
    assert family_of_folder(tmp_path / "llama3.1_json.jinja").one_call_per_message
    assert not family_of_folder(tmp_path / "hermes.jinja").one_call_per_message
    # xLAM-2's model cards give tools as plain {name, description, parameters}; the others as OpenAI entries.
    assert family_of_folder(tmp_path / "xlam_qwen.jinja").tool_entries == "plain"
    assert family_of_folder(tmp_path / "hermes.jinja").tool_entries == "openai"


def test_every_parser_a_family_names_is_registered(templates):
    texts = [(templates / name).read_text() for name in SHARED_FAMILIES] + [
        MISTRAL_TEMPLATE,
        CHATML_WITHOUT_TOOLS,
        TINY_TEMPLATE,
    ]
    named = {
        family_of_template(text, model_type).parser for text in texts for model_type in ("llama", "qwen2", "mistral")
    }
    assert named == {"xlam", "hermes", "llama3_json", "mistral"}
    assert named <= set(parser_names())


def test_a_mistral_template_and_one_without_tools_are_told_apart(tmp_path):
    mistral = family_of_folder(model_folder(tmp_path / "mistral", MISTRAL_TEMPLATE, model_type="mistral"))
    assert (mistral.parser, mistral.recognised) == ("mistral", True)
    smol = family_of_folder(model_folder(tmp_path / "smol", CHATML_WITHOUT_TOOLS))
    # Today's fallback: the tools go into the system turn, calls are read as xLAM lists.
    assert (smol.parser, smol.takes_tools, smol.recognised) == ("xlam", False, True)


def test_a_template_taking_tools_in_an_unknown_way_falls_back_on_the_architecture():
    # The tiny test model's template lists tools and writes calls, but in no syntax a family owns.
    llama = family_of_template(TINY_TEMPLATE, "llama")
    assert (llama.parser, llama.recognised, llama.takes_tools) == ("xlam", False, True)
    assert family_of_template(TINY_TEMPLATE, "qwen2").parser == "hermes"
    assert family_of_template(TINY_TEMPLATE, "mixtral").parser == "mistral"
    # Not a clear mismatch: whatever parser the config names is used.
    assert chosen_tool_parser("hermes", llama, field="tool_parser", folder="m") == "hermes"


def test_template_homes_follow_transformers_precedence(tmp_path):
    folder = model_folder(tmp_path / "m", CHATML_WITHOUT_TOOLS)
    (folder / "chat_template.jinja").write_text("{{ '<tool_call>' }}{{ tools }}")
    assert read_chat_template(folder) == "{{ '<tool_call>' }}{{ tools }}"  # the .jinja file wins over tokenizer_config
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "tool_use.jinja").write_text("[TOOL_CALLS]{{ tools }}")
    assert family_of_folder(folder).parser == "mistral"  # requests with tools use the tool_use template
    listed = model_folder(tmp_path / "listed", [{"name": "default", "template": "{{ '<tool_call>' }}{{ tools }}"}])
    assert read_chat_template(listed) == {"default": "{{ '<tool_call>' }}{{ tools }}"}
    assert family_of_folder(listed).parser == "hermes"
    assert tool_template({"rag": "x"}) is None


def test_a_folder_without_any_chat_template_is_refused_naming_it(tmp_path):
    folder = model_folder(tmp_path / "base", None)
    with pytest.raises(ModelFamilyError, match=rf"^{folder}: the model's tokenizer has no chat template"):
        family_of_folder(folder)
    (folder / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(ModelFamilyError, match="tokenizer_config.json cannot be read as JSON"):
        family_of_folder(folder)


def test_the_embedded_model_takes_the_xlam_fallback():
    from apigen_mt.pipeline.engines.local_models import ModelError, prepared_smollm2

    try:
        folder = prepared_smollm2()
    except ModelError as exc:
        pytest.skip(f"embedded SmolLM2 not prepared: {exc}")
    family = family_of_folder(folder)
    assert (family.parser, family.takes_tools) == ("xlam", False)


# ------------------------------------------------------------------------------------ the mismatch check


def test_a_parser_contradicting_the_template_is_refused_in_one_line(templates, tmp_path):
    folder = model_folder(tmp_path / "qwen", (templates / "hermes.jinja").read_text(), model_type="qwen2")
    family = family_of_folder(folder)
    assert chosen_tool_parser(None, family, field="tool_parser", folder=str(folder)) == "hermes"
    assert chosen_tool_parser("hermes", family, field="tool_parser", folder=str(folder)) == "hermes"
    with pytest.raises(ModelFamilyError) as refused:
        chosen_tool_parser("xlam", family, field="models.agent.engine.tool_parser", folder=str(folder))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"models.agent.engine.tool_parser: xlam cannot read what the model in {folder} writes")
    assert "<tool_call>" in message and "set it to hermes" in message
    # Tools in the system prompt ask for xLAM lists: any other parser is a mismatch too.
    smol = family_of_template(CHATML_WITHOUT_TOOLS)
    with pytest.raises(ModelFamilyError, match="writes no tools"):
        chosen_tool_parser("llama3_json", smol, field="tool_parser", folder="smol")


def run_config(folder: Path, **engine) -> RunConfig:
    model = {"backend": "vllm", "engine": {"model": str(folder), "device": "cpu", **engine}}
    return RunConfig.model_validate({"models": {"agent": model}, "roles": {role: "agent" for role in ROLES}})


def test_preflight_refuses_the_mismatch_before_ray_starts(templates, tmp_path):
    import ray

    folder = model_folder(tmp_path / "llama", (templates / "llama3.1_json.jinja").read_text())
    preflight(run_config(folder), ["agent"])  # chosen from the template: fine
    with pytest.raises(
        ConfigError, match=r"models\.agent\.engine\.tool_parser: xlam cannot read .* writes calls as \{\"name\""
    ):
        preflight(run_config(folder, tool_parser="xlam"), ["agent"])
    assert not ray.is_initialized()
    # A hub id is no local folder: the engine checks it once loaded.
    preflight(run_config(Path("Qwen/Qwen2.5-7B-Instruct"), tool_parser="xlam"), ["agent"])


def test_the_cli_exits_2_with_the_mismatch_as_its_one_error_line(templates, tmp_path):
    folder = model_folder(tmp_path / "qwen", (templates / "hermes.jinja").read_text(), model_type="qwen2")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "agent": {
                        "backend": "vllm",
                        "engine": {"model": str(folder), "device": "cpu", "tool_parser": "xlam"},
                    }
                },
                "roles": {role: "agent" for role in ROLES},
                "tasks": [{"domain": "retail", "path": "examples:retail"}],
            }
        )
    )
    line = cli_error_line("generate", config, "--output", tmp_path / "run", "--limit", "1", "--quiet")
    assert line == (
        f"apigen-mt: error: models.agent.engine.tool_parser: xlam cannot read what the model in {folder} writes: its "
        "chat template writes calls in <tool_call> tags, which the hermes parser reads; "
        "set it to hermes or leave it out"
    )
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_models_ask_refuses_the_mismatch_in_one_line(templates, tmp_path):
    folder = model_folder(tmp_path / "llama", (templates / "llama3.1_json.jinja").read_text())
    config = tmp_path / "ask.yaml"
    engine = {"model": str(folder), "device": "cpu", "tool_parser": "hermes"}
    models = {"agent": {"backend": "vllm", "engine": engine}}
    config.write_text(yaml.safe_dump({"models": models, "roles": {role: "agent" for role in ROLES}}))
    line = cli_error_line("models", "ask", config, "hello")
    assert line.startswith(
        f"apigen-mt: error: models.agent.engine.tool_parser: hermes cannot read what the model in {folder}"
    )
    assert 'writes calls as {"name": ..., "parameters": ...}, which the llama3_json parser reads' in line
