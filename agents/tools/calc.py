"""calculate: one arithmetic expression, evaluated exactly by a small AST walker.

Small models read numbers right and then add them wrong, so sums, counts and
percentages go through this tool. Never eval/exec: only numbers, + - * / // % **,
unary +/-, parentheses and a few functions over numbers. Every step is bounded
(node count, nesting, exponent, integer size), so no expression can hang or eat memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated

import msgspec

from agents.tools.base import Tool, ToolContext, ToolError

Number = int | float

MAX_NODES = 1000  # AST nodes in one expression
MAX_DEPTH = 100  # nesting, so the walker's recursion stays far from Python's limit
MAX_EXPONENT = 1000  # |b| in a ** b
MAX_INT_BITS = 4096  # any integer, literal or intermediate (about 1233 digits)
MAX_NDIGITS = 100  # |n| in round(x, n): round(5, -10**9) would build 10**(10**9)
SIGNIFICANT = 15  # a float is shown to 15 significant digits: 0.1+0.2 shows 0.3

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = ("sum", "min", "max", "round", "abs", "len")
# What a refused construct is called in the one-line error.
_NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "lambda",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.Compare: "comparisons", ast.BoolOp: "and/or",
    ast.IfExp: "if/else", ast.Dict: "dicts", ast.Set: "sets", ast.NamedExpr: "assignment",
    ast.JoinedStr: "strings", ast.Starred: "* unpacking", ast.Await: "await",
}


class CalcArgs(msgspec.Struct, forbid_unknown_fields=True):
    expression: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


def _refuse(why: str) -> ToolError:
    return ToolError(f"calculate: {why}")


def _checked(value: Number) -> Number:
    """Every intermediate result: a finite float or an int of bounded size."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _refuse(f"result too large (integers are limited to {MAX_INT_BITS} bits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse("result too large (not a finite number)")
    if not isinstance(value, (int, float)):  # a negative base to a fractional power is complex
        raise _refuse("the result is not a real number")
    return value


def _source(node: ast.AST) -> str:
    """The source of a refused part, short enough for a one-line error."""
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:39] + "…"


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise _refuse(f"exponent {exponent} is too large (at most {MAX_EXPONENT} either way)")
    # Decided before computing: an int power is as big as its bits say.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 \
            and (base.bit_length() - 1) * exponent > MAX_INT_BITS:
        raise _refuse(f"result too large (integers are limited to {MAX_INT_BITS} bits)")
    return base ** exponent


class _Evaluator:
    def number(self, node: ast.expr, depth: int = 0) -> Number:
        if depth > MAX_DEPTH:
            raise _refuse(f"nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, (str, bytes)):
                raise _refuse("strings are not allowed, only numbers")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _refuse(f"{value!r} is not a number")
            return _checked(value)
        if isinstance(node, ast.BinOp):
            left = self.number(node.left, depth + 1)
            right = self.number(node.right, depth + 1)
            if isinstance(node.op, ast.Pow):
                return _checked(_power(left, right))
            op = _BINARY.get(type(node.op))
            if op is None:
                raise _refuse(f"the operator {type(node.op).__name__} is not allowed (only + - * / // % **)")
            return _checked(op(left, right))
        if isinstance(node, ast.UnaryOp):
            unary = _UNARY.get(type(node.op))
            if unary is None:
                raise _refuse(f"the operator {type(node.op).__name__} is not allowed (only unary + and -)")
            return _checked(unary(self.number(node.operand, depth + 1)))
        if isinstance(node, ast.Call):
            return _checked(self.call(node, depth + 1))
        if isinstance(node, (ast.List, ast.Tuple)):
            raise _refuse("a list is only allowed inside sum, min, max or len "
                          "(and 1,000 is a list: write numbers without thousands separators)")
        if isinstance(node, ast.Name):
            raise _refuse(f"names are not allowed ({node.id}); only numbers and {', '.join(_FUNCTIONS)}")
        raise _refuse(f"not allowed: {_NAMES.get(type(node), type(node).__name__)} "
                      f"(only numbers, + - * / // % **, parentheses and {', '.join(_FUNCTIONS)})")

    def numbers(self, node: ast.expr, depth: int) -> list[Number]:
        if not isinstance(node, (ast.List, ast.Tuple)):
            raise _refuse("sum, min, max and len take a list of numbers, e.g. sum([3, 5, 9])")
        return [self.number(item, depth + 1) for item in node.elts]

    def call(self, node: ast.Call, depth: int) -> Number:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            what = name if name is not None else _source(node.func)
            raise _refuse(f"calling {what} is not allowed; only {', '.join(_FUNCTIONS)}")
        if node.keywords:
            raise _refuse(f"{name} takes no keyword arguments here")
        args = node.args
        if name in ("sum", "len"):
            if len(args) != 1:
                raise _refuse(f"{name} takes one list, e.g. {name}([3, 5, 9])")
            items = self.numbers(args[0], depth)
            return sum(items) if name == "sum" else len(items)
        if name in ("min", "max"):
            # max([3, 9]) or max(3, 9), as in Python
            items = (self.numbers(args[0], depth) if len(args) == 1
                     else [self.number(a, depth + 1) for a in args])
            if not items:
                raise _refuse(f"{name} of an empty list")
            return min(items) if name == "min" else max(items)
        if name == "abs":
            if len(args) != 1:
                raise _refuse("abs takes one number")
            return abs(self.number(args[0], depth + 1))
        # round(x) or round(x, ndigits)
        if len(args) not in (1, 2):
            raise _refuse("round takes a number and optionally the digits to keep, e.g. round(2.675, 2)")
        value = self.number(args[0], depth + 1)
        if len(args) == 1:
            return round(value)
        ndigits = self.number(args[1], depth + 1)
        if not isinstance(ndigits, int) or abs(ndigits) > MAX_NDIGITS:
            raise _refuse(f"round's digits must be a whole number from -{MAX_NDIGITS} to {MAX_NDIGITS}")
        return round(value, ndigits)


def evaluate(expression: str) -> Number:
    """The value of one arithmetic expression; ToolError (one line) for anything else."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise _refuse(f"not an arithmetic expression ({err.msg})") from None
    except (RecursionError, MemoryError, ValueError):  # pathological nesting; a NUL byte
        raise _refuse("not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise _refuse(f"expression too long (at most {MAX_NODES} parts)")
    try:
        return _Evaluator().number(tree.body)
    except ZeroDivisionError:
        raise _refuse("division by zero") from None
    except OverflowError:
        raise _refuse("result too large") from None


def show(value: Number) -> str:
    """An int in full; a float to 15 significant digits (6.0 -> 6, 0.1+0.2 -> 0.3)."""
    return str(value) if isinstance(value, int) else f"{value:.{SIGNIFICANT}g}"


async def calculate(_ctx: ToolContext, args: CalcArgs) -> str:
    expression = " ".join(args.expression.split())
    return f"{expression} = {show(evaluate(expression))}"


CALC_TOOLS = [
    Tool("calculate", "Evaluate arithmetic exactly, e.g. 12+7+30 or (1.5*4)/3 or sum([3, 5, 9]); "
         "use it for every sum, count or percentage.", CalcArgs, "read", calculate, timeout_s=5),
]
