"""Environment toolkits: a tool is a typed, documented method, and its JSON Schema is derived from it.

```python
class ShopTools(Toolkit):
    @tool(writes=True)
    def cancel_order(self, order_id: str, reason: Literal["mistake", "not needed"]) -> str:
        '''Cancel a pending order.

        Args:
            order_id: The order id, such as '#W0000001'.
            reason: Why the user cancels.
        '''
        order = self.db["orders"][order_id]
        ...
```

The docstring's text before `Args:` is the tool description; each `name: text` entry under `Args:`
describes that parameter. Nested objects are `TypedDict`s whose fields may carry a description as
`Annotated[str, "text"]`. Tools read and change `self.db` (plain JSON-like data) and return a string.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

import jsonschema

from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import ToolSpec


class ToolDefinitionError(TypeError):
    """A tool method cannot be turned into a JSON Schema (unsupported annotation, undocumented parameter...)."""


@dataclass(frozen=True)
class _ToolMark:
    writes: bool
    terminates: bool


def tool(*, writes: bool = False, terminates: bool = False) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Mark a Toolkit method as a tool. `writes`: it may change the database; `terminates`: it ends the episode."""

    def mark(method: Callable[..., str]) -> Callable[..., str]:
        method.__tool__ = _ToolMark(writes=writes, terminates=terminates)  # type: ignore[attr-defined]
        return method

    return mark


def class_name(tool_name: str) -> str:
    """`cancel_pending_order` -> `CancelPendingOrder` (the name tau-bench's error texts use)."""
    return "".join(part[:1].upper() + part[1:] for part in tool_name.split("_"))


_ARGS_HEADER = re.compile(r"^\s*Args:\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^(\w+)\s*(?:\([^)]*\))?:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    doc = inspect.cleandoc(doc or "")
    parts = _ARGS_HEADER.split(doc, maxsplit=1)
    description = " ".join(parts[0].split())
    params: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            indented = line.startswith((" " * 8, "\t\t"))
            match = _ARG_LINE.match(stripped)
            if match and not indented:
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {stripped}".strip()
    return description, params


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", types.NoneType: "null"}


def json_schema_of(annotation: Any, where: str) -> dict[str, Any]:
    """The JSON Schema of an annotation:
    str, int, float, bool, None, list[T], dict[str, T], Literal, TypedDict, unions."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        inner, *meta = get_args(annotation)
        schema = json_schema_of(inner, where)
        descriptions = [item for item in meta if isinstance(item, str)]
        if descriptions:
            schema["description"] = descriptions[0]
        return schema
    if origin in (typing.Required, typing.NotRequired):
        # Whether the key is required is decided by the TypedDict branch below.
        return json_schema_of(get_args(annotation)[0], where)
    if origin is Literal:
        values = list(get_args(annotation))
        kinds = {_SCALARS.get(type(value)) for value in values}
        if len(kinds) != 1 or None in kinds:
            raise ToolDefinitionError(f"{where}: Literal values must share one scalar type, got {values!r}")
        return {"type": kinds.pop(), "enum": values}
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return {"type": "array"} if item is Any else {"type": "array", "items": json_schema_of(item, where)}
    if annotation is dict or origin is dict:
        # dict[str, T] is an object keyed by free-form names (ids, option names) whose values are all T.
        value = get_args(annotation)[1] if get_args(annotation) else Any
        if value is Any:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": json_schema_of(value, where)}
    if typing.is_typeddict(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        properties = {name: json_schema_of(hint, f"{where}.{name}") for name, hint in hints.items()}
        # The markers are read from the hints too: under `from __future__ import annotations`, Python 3.11
        # counts a `NotRequired` key among `__required_keys__`.
        required = [
            name
            for name, hint in hints.items()
            if get_origin(hint) is typing.Required
            or (get_origin(hint) is not typing.NotRequired and name in annotation.__required_keys__)
        ]
        return {"type": "object", "properties": properties, "required": required}
    if origin in (typing.Union, types.UnionType):
        # `T | None` (an optional parameter) is `anyOf` T and null, the form grammar-guided decoders all accept.
        return {"anyOf": [json_schema_of(option, where) for option in get_args(annotation)]}
    raise ToolDefinitionError(f"{where}: cannot derive a JSON Schema from the annotation {annotation!r}")


@dataclass(frozen=True)
class BoundTool:
    """A tool's spec together with the method that runs it."""

    spec: ToolSpec
    method_name: str
    params: tuple[str, ...]
    required: tuple[str, ...]

    @functools.cached_property
    def validator(self) -> jsonschema.Draft202012Validator:
        """A checker of the tool's full schema, built once per tool rather than once per call."""
        return jsonschema.Draft202012Validator(self.spec.strict_parameters())


def _describe(method: Callable[..., str], mark: _ToolMark) -> BoundTool:
    name = method.__name__
    description, param_docs = _parse_docstring(method.__doc__ or "")
    if not description:
        raise ToolDefinitionError(f"tool {name}: the docstring must describe what the tool does")
    hints = get_type_hints(method, include_extras=True)
    signature = inspect.signature(method)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in list(signature.parameters.values())[1:]:
        if param.name not in hints:
            raise ToolDefinitionError(f"tool {name}: parameter {param.name!r} has no type annotation")
        schema = json_schema_of(hints[param.name], f"{name}.{param.name}")
        if param.name in param_docs:
            schema["description"] = param_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif param.default is None or isinstance(param.default, (str, int, float, bool)):
            schema["default"] = param.default  # what the tool does when the argument is left out
        properties[param.name] = schema
    unknown = set(param_docs) - set(properties)
    if unknown:
        raise ToolDefinitionError(f"tool {name}: the docstring documents unknown parameters {sorted(unknown)}")
    spec = ToolSpec(
        name=name,
        description=description,
        parameters={"type": "object", "properties": properties, "required": required},
        writes=mark.writes,
        terminates=mark.terminates,
    )
    return BoundTool(spec=spec, method_name=name, params=tuple(properties), required=tuple(required))


class Toolkit:
    """Base class of a domain's tools. An instance wraps one database: the episode's own copy."""

    _tools: dict[str, BoundTool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, BoundTool] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                mark = getattr(value, "__tool__", None)
                if isinstance(mark, _ToolMark):
                    found[attr] = _describe(value, mark)
        # Advertised in name order, the order tau-bench lists its tools in.
        cls._tools = dict(sorted(found.items()))

    def __init__(self, db: JSON) -> None:
        self.db = db

    @classmethod
    def tools(cls) -> dict[str, BoundTool]:
        return cls._tools

    @classmethod
    def specs(cls) -> list[ToolSpec]:
        return [bound.spec for bound in cls._tools.values()]

    @classmethod
    def argument_error(cls, bound: BoundTool, arguments: dict[str, Any]) -> str | None:
        """Why these arguments cannot be passed to the tool, as an observation; None when they can.

        The default checks everything the schema says. Toolkits that must answer bad values with the
        tool's own message (tau-bench's domains) override this with a narrower check.
        """
        error = jsonschema.exceptions.best_match(bound.validator.iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path)
        return (
            f"Error: invalid arguments for {bound.spec.name}"
            + (f" at '{where}'" if where else "")
            + f": {error.message}"
        )

    def run(self, name: str, arguments: dict[str, Any]) -> str | None:
        """Run a known tool with already checked arguments; exceptions propagate to the environment."""
        return getattr(self, self._tools[name].method_name)(**arguments)


class PythonCallArguments:
    """Argument checks that answer like a Python call of `{Class}.invoke(**kwargs)`, as tau-bench's tools do.

    Unexpected and missing arguments get CPython 3.11's TypeError wording; then each top-level value must
    have its declared JSON type. Enums and the contents of nested objects are left to the tool, whose own
    checks (`Error: invalid reason`, `Error: 'flight_number'`) are part of the contract.
    """

    @classmethod
    def argument_error(cls, bound: BoundTool, arguments: dict[str, Any]) -> str | None:
        invoke = f"{class_name(bound.spec.name)}.invoke()"
        for key in arguments:
            if key not in bound.params:
                return f"Error: {invoke} got an unexpected keyword argument '{key}'"
        missing = [name for name in bound.required if name not in arguments]
        if missing:
            quoted = [f"'{name}'" for name in missing]
            if len(quoted) == 1:
                listed = quoted[0]
            elif len(quoted) == 2:
                listed = f"{quoted[0]} and {quoted[1]}"
            else:
                listed = ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
            plural = "argument" if len(missing) == 1 else "arguments"
            return f"Error: {invoke} missing {len(missing)} required positional {plural}: {listed}"
        properties = bound.spec.parameters["properties"]
        for key, value in arguments.items():
            expected = properties[key].get("type")
            if expected and not jsonschema.Draft202012Validator({"type": expected}).is_valid(value):
                return (
                    f"Error: argument '{key}' of {bound.spec.name} must be of type {expected}, "
                    f"got {type(value).__name__}"
                )
        return None
