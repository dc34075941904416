"""Which tool-call format a model writes, read from its folder: the chat template and the architecture.

    family = family_of_folder(Path("models/Qwen2.5-7B-Instruct"))
    family.parser                       # 'hermes'
    family.writes                       # 'calls in <tool_call> tags'
    chosen_tool_parser(None, family, field="tool_parser", folder="models/Qwen2.5-7B-Instruct")   # 'hermes'

The template decides, because fine-tunes keep their base's architecture and change the format (xLAM-2 is
Llama 3.1 or Qwen 2.5 underneath, Hermes 3 is Llama 3.1); the architecture only fills in for a template that
takes tools in a way this module does not recognise. A configured parser that contradicts a recognised
template is refused (`ModelFamilyError`), before Ray starts and again when the engine starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RawTemplate = str | dict[str, str] | None  # one template, or several by name (transformers' form)

# Families whose every tool-trained release writes one format: the guess for a template that takes tools
# without any call syntax recognised below (a custom template on a Qwen or Mistral model).
_FORMAT_OF_MODEL_TYPE = {
    "qwen2": "hermes",
    "qwen2_moe": "hermes",
    "qwen3": "hermes",
    "qwen3_moe": "hermes",
    "mistral": "mistral",
    "mixtral": "mistral",
}

# Llama 3.x writes a call as {"name": ..., "parameters": ...}; the template spells the key out.
_LLAMA3_CALL = re.compile(r'"parameters": ')


class ModelFamilyError(ValueError):
    """A model folder's chat template is missing or unreadable, or contradicts the configured tool-call parser."""


@dataclass(frozen=True)
class ModelFamily:
    """What a chat template says about tool calls, and how its `tools=` and messages must look."""

    parser: str  # the tool-call parser (simulators.tool_parsers) that reads what the model writes
    writes: str  # what the template writes for a call, for messages
    recognised: bool  # the template itself shows the format: another parser is a clear mismatch
    takes_tools: bool  # the template renders `tools=`; otherwise they go into the system turn in xLAM's format
    tool_entries: Literal["openai", "plain"]  # `tools=` entries as the model card gives them
    one_call_per_message: bool = False  # the template refuses an assistant message holding several calls


def tool_template(raw: RawTemplate) -> str | None:
    """The template transformers applies to a request with tools: `tool_use` when named, else `default`."""
    if isinstance(raw, dict):
        return raw.get("tool_use") or raw.get("default")
    return raw or None


def family_of_template(template: str | None, model_type: str | None = None) -> ModelFamily:
    """The family a chat template belongs to; `model_type` (config.json) guesses for an unrecognised one."""
    if not template:
        raise ValueError(
            "the model's tokenizer has no chat template; use an instruct/chat model or add a chat_template to its "
            "tokenizer_config.json"
        )
    if "xLAM" in template:  # xLAM-2's templates introduce the model by name; they write a JSON list of calls
        return ModelFamily("xlam", "calls as a JSON list (xLAM)", True, True, "plain")
    if "<tool_call>" in template:
        return ModelFamily("hermes", "calls in <tool_call> tags", True, True, "openai")
    if "[TOOL_CALLS]" in template:
        return ModelFamily("mistral", "calls after [TOOL_CALLS]", True, True, "openai")
    if _LLAMA3_CALL.search(template) and "tool_call" in template:
        return ModelFamily("llama3_json", 'calls as {"name": ..., "parameters": ...}', True, True, "openai", True)
    if "tools" not in template:
        return ModelFamily(
            "xlam", "no tools (they go into the system turn, calls as an xLAM JSON list)", True, False, "plain"
        )
    guessed = _FORMAT_OF_MODEL_TYPE.get(model_type or "", "xlam")
    writes = f"tools but no call syntax this project recognises (model_type {model_type})"
    return ModelFamily(guessed, writes, False, True, "openai")


def read_chat_template(folder: Path) -> RawTemplate:
    """The chat template(s) transformers would load from a model or tokenizer folder, None without any.

    `chat_template.jinja` (with `additional_chat_templates/*.jinja`) overrides tokenizer_config.json's
    `chat_template`, as in transformers; `chat_template.json` (processors' file) comes last.
    """
    single = folder / "chat_template.jinja"
    if single.is_file():
        named = {"default": single.read_text(encoding="utf-8")}
        extra = folder / "additional_chat_templates"
        if extra.is_dir():
            named.update({path.stem: path.read_text(encoding="utf-8") for path in sorted(extra.glob("*.jinja"))})
        return named if len(named) > 1 else named["default"]
    for name in ("tokenizer_config.json", "chat_template.json"):
        raw = _json_file(folder / name).get("chat_template")
        if isinstance(raw, list):  # several templates: [{"name": ..., "template": ...}]
            return {entry["name"]: entry["template"] for entry in raw if isinstance(entry, dict) and "name" in entry}
        if isinstance(raw, str) and raw:
            return raw
    return None


def read_model_type(folder: Path) -> str | None:
    """config.json's `model_type` (e.g. llama, qwen2), None when the folder does not say."""
    model_type = _json_file(folder / "config.json").get("model_type")
    return model_type if isinstance(model_type, str) else None


def family_of_folder(model_folder: Path, tokenizer_folder: Path | None = None) -> ModelFamily:
    """The family of a local model folder (the template from its tokenizer folder when that is separate)."""
    template = tool_template(read_chat_template(tokenizer_folder or model_folder))
    try:
        return family_of_template(template, read_model_type(model_folder))
    except ValueError as exc:
        raise ModelFamilyError(f"{tokenizer_folder or model_folder}: {exc}") from None


def chosen_tool_parser(configured: str | None, family: ModelFamily, *, field: str, folder: str) -> str:
    """The configured parser, or the family's when none is; a clear contradiction raises `ModelFamilyError`."""
    if configured is None:
        return family.parser
    if configured != family.parser and family.recognised:
        raise ModelFamilyError(
            f"{field}: {configured} cannot read what the model in {folder} writes: its chat template writes "
            f"{family.writes}, which the {family.parser} parser reads; set it to {family.parser} or leave it out"
        )
    return configured


def _json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ModelFamilyError(f"{path} cannot be read as JSON: {exc}") from None
    return data if isinstance(data, dict) else {}
