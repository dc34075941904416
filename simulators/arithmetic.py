"""Safe arithmetic for `calculate` tools: Python's own parser and operators, no `eval`.

The expression is parsed with `ast` (so syntax errors read exactly as `eval` would report them) and
walked here over the only node kinds its character set allows: number literals, `...`, `()`,
`+ - * / // **`, unary signs and calls (which always fail, as calling a number does).
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

ALLOWED_CHARACTERS = frozenset("0123456789+-*/(). ")
# Beyond this many bits an integer power is refused instead of computed: it would take minutes and
# gigabytes, and no price or total comes anywhere near it.
MAX_POWER_BITS = 1 << 20

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class ExpressionTooLarge(ArithmeticError):
    pass


def evaluate(expression: str) -> Any:
    """The value Python would compute for `expression`; raises what Python would raise."""
    return _value(ast.parse(expression, filename="<string>", mode="eval").body)


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_value(item) for item in node.elts)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _refuse_huge_power(left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call):
        func = _value(node.func)
        for arg in node.args:
            _value(arg)
        raise TypeError(f"'{type(func).__name__}' object is not callable")
    raise ValueError(f"unsupported expression element {type(node).__name__}")


def _refuse_huge_power(base: Any, exponent: Any) -> None:
    if type(base) is int and type(exponent) is int and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_POWER_BITS:
            raise ExpressionTooLarge("int too large to convert to float")


def calculate(expression: str) -> str:
    """tau-bench's `calculate` observation for an expression."""
    if any(char not in ALLOWED_CHARACTERS for char in expression):
        return "Error: invalid characters in expression"
    try:
        return str(round(float(evaluate(expression)), 2))
    except Exception as exc:
        return f"Error: {exc}"
