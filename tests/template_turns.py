"""What a family's real chat template (`../shared/chat-templates/`) writes for an assistant turn with
tool calls: the text a model of that family produces for those calls."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SHARED

TEMPLATES = SHARED / "chat-templates"
# template -> (the family's parser, the end-of-turn marker the template writes after a turn)
FAMILIES = {
    "xlam_llama": ("xlam", "<|eot_id|>"),
    "xlam_qwen": ("xlam", "<|im_end|>"),
    "hermes": ("hermes", "<|im_end|>"),
    "llama3.1_json": ("llama3_json", "<|eot_id|>"),
}
# Templates that refuse an assistant message with more than one call.
ONE_CALL_ONLY = {"llama3.1_json"}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {key: {"type": kind, "description": key} for key, kind in properties.items()},
                "required": list(properties),
            },
        },
    }
    for name, description, properties in (
        ("get_order_details", "Get an order.", {"order_id": "string"}),
        (
            "book_reservation",
            "Book flights.",
            {"flights": "array", "passengers": "array", "insurance": "string", "total": "number"},
        ),
        ("suche", "Sucht eine Stadt.", {"stadt": "string", "meta": "object"}),
    )
]


def template(name: str) -> str:
    path = TEMPLATES / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(
            f"chat template {name}.jinja not found at {TEMPLATES} "
            "(expected ../shared/chat-templates beside the checkout)"
        )
    return path.read_text()


def render(name: str, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    """The text transformers' `apply_chat_template` makes of `messages` (it forwards to this renderer)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=TOOLS,
        chat_template=template(name),
        add_generation_prompt=add_generation_prompt,
        bos_token="<s>",
        date_string="26 Jul 2024",
    )
    return rendered[0]


def assistant_turn(name: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """The text `name` writes for an assistant message making `calls` (arguments as mappings): what follows
    the generation prompt, up to the end-of-turn marker."""
    before = [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": "Please help me with my booking."},
    ]
    tool_calls = [
        {"id": f"call_{index}", "type": "function", "function": {"name": call, "arguments": arguments}}
        for index, (call, arguments) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": "", "tool_calls": tool_calls}
    prompt = render(name, before, add_generation_prompt=True)
    full = render(name, [*before, message], add_generation_prompt=False)
    assert full.startswith(prompt), f"{name}: the generation prompt is not where the assistant turn starts"
    turn, marker, _ = full[len(prompt) :].partition(FAMILIES[name][1])
    assert marker, f"{name}: no end-of-turn marker after the assistant turn"
    return turn
