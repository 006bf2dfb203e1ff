"""Safe integer expressions for multistep arithmetic: an int, a one-letter variable, or ``(left, op, right)``.

Model text is untrusted: expressions are parsed with ``ast`` into this tiny tree (ints, one-letter variables,
``+ - *``, unary minus) and evaluated by hand with a size cap, never with ``eval``. Also here: TriPosT's rendering
(fully parenthesised) and its solving order (innermost operations first, left to right).
"""

from __future__ import annotations

import ast
import re
from typing import TypeAlias

Expr: TypeAlias = "int | str | tuple[Expr, str, Expr]"

_MAX_CHARS = 2000  # longer "expressions" in model output are rejected before parsing
_MAX_ABS = 10**60  # far above any true intermediate value (< 10**10); stops blow-ups like 9*9*9*...
_MAX_DEPTH = 100  # tree depth; keeps every recursive helper far from Python's recursion limit
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


class InvalidExpression(ValueError):
    """Text that is not an expression over ints, variables, ``+ - *`` and parentheses (or is too large)."""


def parse_expr(text: str) -> Expr:
    """Parse untrusted text into an expression tree (Python precedence: ``*`` before ``+ -``, left to right)."""
    text = text.strip()
    if not text or len(text) > _MAX_CHARS:
        raise InvalidExpression(text)
    try:
        return _convert(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise InvalidExpression(text) from error


def _convert(node: ast.AST, depth: int = 0) -> Expr:
    if depth > _MAX_DEPTH:
        raise InvalidExpression("expression nested too deeply")
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= _MAX_ABS:
        return node.value
    if isinstance(node, ast.Name) and re.fullmatch(r"[A-Z]", node.id):
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _convert(node.operand, depth + 1)
        if isinstance(node.op, ast.UAdd):
            return inner
        return -inner if isinstance(inner, int) else (0, "-", inner)
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        return (_convert(node.left, depth + 1), _AST_OPS[type(node.op)], _convert(node.right, depth + 1))
    raise InvalidExpression(ast.dump(node)[:80])


def evaluate(expr: Expr, env: dict[str, int] | None = None) -> int:
    """Value of ``expr``; variables are looked up in ``env``. Raises InvalidExpression on unknown/too large."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        if env is None or expr not in env:
            raise InvalidExpression(f"unknown variable {expr}")
        return env[expr]
    left, op, right = expr
    a, b = evaluate(left, env), evaluate(right, env)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    if abs(value) > _MAX_ABS:
        raise InvalidExpression("number too large")
    return value


def variables(expr: Expr) -> list[str]:
    """Variable names in ``expr``, left to right."""
    if isinstance(expr, str):
        return [expr]
    if isinstance(expr, tuple):
        return variables(expr[0]) + variables(expr[2])
    return []


def render(expr: Expr) -> str:
    """Fully parenthesised text, TriPosT style: ``((7 - -1) + -1)``."""
    if isinstance(expr, tuple):
        return f"({render(expr[0])} {expr[1]} {render(expr[2])})"
    return str(expr)


def substitute(expr: Expr, values: dict[str, int]) -> Expr:
    if isinstance(expr, str):
        return values[expr]
    if isinstance(expr, tuple):
        return (substitute(expr[0], values), expr[1], substitute(expr[2], values))
    return expr


def reduction_steps(expr: Expr) -> list[Expr]:
    """TriPosT's solving order: each round replaces the innermost operations present at its start, one at a time
    from left to right (one ``=`` per replacement), until a number remains."""
    forms = []
    while isinstance(expr, tuple):
        for path in _innermost_paths(expr):
            expr = _replace_at(expr, path)
            forms.append(expr)
    return forms


def _innermost_paths(expr: Expr, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if not isinstance(expr, tuple):
        return []
    left, _, right = expr
    if not isinstance(left, tuple) and not isinstance(right, tuple):
        return [path]
    return _innermost_paths(left, (*path, 0)) + _innermost_paths(right, (*path, 2))


def _replace_at(expr: Expr, path: tuple[int, ...]) -> Expr:
    if not path:
        return evaluate(expr)
    assert isinstance(expr, tuple)
    parts = list(expr)
    parts[path[0]] = _replace_at(parts[path[0]], path[1:])
    return (parts[0], parts[1], parts[2])
