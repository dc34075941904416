"""The config reference, docs/config.md, made from the pydantic models of a run config.

    python -m apigen_mt.pipeline.config_reference > docs/config.md

Every section and field in the order of a config file, with its type and bounds, default and description; then the
concurrency rule, from `concurrency`'s docstring. A field without a description (or a section without one
or a class docstring) stops the generator, so the reference never has a blank. A test checks that
docs/config.md is what this makes now.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from apigen_mt.pipeline.config import RunConfig, concurrency
from apigen_mt.pipeline.config_values import MAX_CONFIG_CHARS, MAX_DEPTH

HEADER = f"""\
# Run config reference

Generated from the pydantic models by `python -m apigen_mt.pipeline.config_reference > docs/config.md`; do
not edit it by hand (a test fails when it is not what the generator makes). A run config is a YAML file
(`configs/` has examples); its sections come here in the order of such a file. In a section's path, `NAME`
is a name you choose and `[]` is each entry of a list.

Values are read as JSON reads them: a number field takes a number, not `true` or `"3"`, and an int field not
`3.0`. A config holds text, numbers, true/false, null, lists and mappings with text keys, nested at most
{MAX_DEPTH} levels and at most {MAX_CONFIG_CHARS:,} characters as JSON once its YAML aliases are expanded.
"""


class UndocumentedField(ValueError):
    """A config field (or section) has no description to put in the reference."""


def config_reference() -> str:
    """docs/config.md's text."""
    parts = [HEADER]
    for title, model, about in sections(RunConfig, "", "", None):
        parts.append(f"\n## {title}\n\n{about}\n\n| field | type | default | description |\n|---|---|---|---|\n")
        parts.extend(_row(name, field, f"{title}: {name}") for name, field in model.model_fields.items())
    rule = inspect.cleandoc(concurrency.__doc__ or "")
    parts.append(f"\n## Concurrency\n\nFrom the docstring of `apigen_mt.pipeline.config.concurrency`:\n\n{rule}\n")
    return "".join(parts)


def sections(
    model: type[BaseModel], path: str, label: str, field: FieldInfo | None
) -> Iterator[tuple[str, type[BaseModel], str]]:
    """(title, model, what it is) of the section, then of its fields' sections, depth first in field order."""
    title = (path or "top level") + (f" ({label})" if label else "")
    about = _summary(model) or (field.description if field is not None else None)
    if not about:
        raise UndocumentedField(f"{title}: give the field a description or {model.__name__} a docstring")
    yield title, model, " ".join(about.split())
    for name, child in model.model_fields.items():
        for suffix, nested in _nested(child.annotation):
            yield from sections(nested, f"{path}.{name}{suffix}".lstrip("."), _label(nested) or label, child)


def _nested(annotation: Any, suffix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """The sections a field holds, each with its path after the field's name (`.NAME`, `[]`)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield suffix, annotation
    elif origin is Annotated:
        yield from _nested(args[0], suffix)
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _nested(arg, suffix)
    elif origin is dict:
        yield from _nested(args[1], f"{suffix}.NAME")
    elif origin is list:
        yield from _nested(args[0], f"{suffix}[]")


def _label(model: type[BaseModel]) -> str:
    """What tells one kind of section from the others in a union: its one-value field (`backend: vllm`)."""
    for name, field in model.model_fields.items():
        if get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1:
            return f"{name}: {get_args(field.annotation)[0]}"
    return ""


def _summary(model: type[BaseModel]) -> str | None:
    """The first paragraph of the model's docstring."""
    doc = model.__doc__
    return inspect.cleandoc(doc).split("\n\n")[0] if doc else None


def _row(name: str, field: FieldInfo, where: str) -> str:
    nested = next(_nested(field.annotation), None)
    description = field.description or (None if nested is None else _summary(nested[1]))
    if not description:
        docstring = "" if nested is None else f" or {nested[1].__name__} a docstring"
        raise UndocumentedField(f"{where}: give the field a description{docstring}")
    cells = (f"`{name}`", _type(field.annotation) + _bounds(field), _default(field), " ".join(description.split()))
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if origin is Annotated:
        return _type(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type(arg) for arg in args))
    if origin is Literal:
        return " or ".join(json.dumps(value) for value in args)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return f"list of {_type(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type(arg) for arg in args) + "]"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    return annotation.__name__


def _bounds(field: FieldInfo) -> str:
    """The field's numeric bounds as the tail of its type cell (`, ≥ 1, ≤ 1_000`); `_` groups digits as YAML does."""
    signs = {Ge: ("≥", "ge"), Gt: (">", "gt"), Le: ("≤", "le"), Lt: ("<", "lt")}
    return "".join(
        f", {signs[type(item)][0]} {getattr(item, signs[type(item)][1]):_}"
        for item in field.metadata
        if type(item) in signs
    )


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    return f"`{json.dumps(to_jsonable_python(value))}`"


def main() -> None:
    try:
        sys.stdout.write(config_reference())
    except UndocumentedField as exc:
        print(f"config_reference: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
