"""calculate: exact arithmetic through the tool's own parser, and everything else refused in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import call, context, examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.store import AsyncStore
from agents.tools import TOOLS, ToolResult, invoke
from agents.tools.base import SandboxSettings, ToolContext
from agents.tools.calc import show


@pytest.mark.parametrize(("expression", "value"), [
    ("12+7+30", "49"),  # the sum a small model got wrong
    ("1.5+2.25", "3.75"),
    ("0.1+0.2", "0.3"),  # 15 significant digits: no 0.30000000000000004
    ("(1.5*4)/3", "2"),  # a whole float is shown without .0
    ("2+3*4", "14"),
    ("(2+3)*4", "20"),
    ("-2**2", "-4"),  # ** binds tighter than unary minus, as in Python
    ("2**-1", "0.5"),
    ("7//2 + 7%2", "4"),
    ("1/3", "0.333333333333333"),
    ("sum([3, 5, 9])", "17"),
    ("sum((1.5, 2.5))", "4"),
    ("len([4, 8, 15, 16, 23, 42])", "6"),
    ("round(2.5)", "2"),  # Python's rounding: half to even
    ("round(7/31*100, 1)", "22.6"),
    ("max(3, 9, 4) - min([3, 9, 4])", "6"),
    ("abs(-12)", "12"),
    ("2**1000 // 2**999", "2"),
    ("sum([])", "0"),
])
async def test_right_values(astore: AsyncStore, ws: Path, expression: str, value: str) -> None:
    result = await call(context(astore, ws), "calculate", expression=expression)
    assert result.status == "ok"
    assert result.text == f"{expression} = {value}"


async def test_whitespace_is_collapsed_in_the_echo(astore: AsyncStore, ws: Path) -> None:
    result = await call(context(astore, ws), "calculate", expression="  1 +\n 2 ")
    assert result.text == "1 + 2 = 3"


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os')", "calling __import__ is not allowed"),
    ("os.system('ls')", "calling os.system is not allowed"),
    ("(1).real", "not allowed: attribute access"),
    ("x + 1", "names are not allowed (x)"),
    ("'a' * 3", "strings are not allowed"),
    ("[n for n in [1, 2]]", "not allowed: comprehensions"),
    ("(lambda: 1)()", "calling lambda: 1 is not allowed"),
    ("lambda: 1", "not allowed: lambda"),
    ("1 < 2", "not allowed: comparisons"),
    ("True + 1", "True is not a number"),
    ("1j * 2", "1j is not a number"),
    ("5 & 3", "the operator BitAnd is not allowed"),
    ("9**9**9", "exponent 387420489 is too large"),
    ("10**100000", "exponent 100000 is too large"),
    ("7**1000 * 7**1000", "result too large"),
    ("10.0**1000", "result too large"),
    ("1e308 * 10", "result too large"),
    ("(-8) ** 0.5", "not a real number"),
    ("1/0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("1,000 + 5", "without thousands separators"),
    ("sum(1, 2)", "sum takes one list"),
    ("max([])", "max of an empty list"),
    ("round(5, -10**9)", "round's digits must be a whole number"),
    ("round(2.5, ndigits=1)", "no keyword arguments"),
    ("2 +", "not an arithmetic expression"),
    ("+".join(["1"] * 500), "expression too long"),  # 999 characters, 1500 nodes,
    ("-" * 200 + "1", "nested too deeply"),
    ("(" * 300 + "1" + ")" * 300, "not an arithmetic expression"),
])
async def test_refused_constructs_are_one_line_errors(astore: AsyncStore, ws: Path, expression: str,
                                                      message: str) -> None:
    result = await call(context(astore, ws), "calculate", expression=expression)
    assert result.status == "error", result
    assert result.text.startswith("calculate: ") and message in result.text
    assert "\n" not in result.text


async def test_the_schema_refuses_a_long_or_empty_expression_and_unknown_fields(astore: AsyncStore, ws: Path) -> None:
    ctx = context(astore, ws)
    for arguments in [{"expression": "1+" * 2500 + "1"}, {"expression": ""}, {"expression": 12},
                      {"expression": "1", "precision": 3}, {}]:
        result, _ = await invoke(TOOLS["calculate"], ctx, arguments)
        assert result.status == "error" and "bad arguments" in result.text, arguments
        assert "\n" not in result.text


def test_it_is_a_read_only_tool_with_a_short_timeout() -> None:
    tool = TOOLS["calculate"]
    assert tool.effect == "read" and tool.timeout_s <= 10
    assert tool.schema()["$defs"]["CalcArgs"]["properties"]["expression"]["maxLength"] == 2000


def test_show_keeps_ints_whole() -> None:
    assert show(10**30) == "1" + "0" * 30  # an int is never rounded to 15 digits
    assert show(2.0) == "2" and show(1e20) == "1e+20"


def _bare_context(tmp_path: Path) -> ToolContext:
    """calculate reads nothing: a context without a store is enough (no per-example database)."""
    return ToolContext(agent="dev", workspace=tmp_path, home=tmp_path / "home", store=None,  # type: ignore[arg-type]
                       sandbox=SandboxSettings(mode="off", bwrap=None))


def _calculate(ctx: ToolContext, expression: str) -> ToolResult:
    result, _ = asyncio.run(invoke(TOOLS["calculate"], ctx, {"expression": expression}))
    return result


@settings(max_examples=examples(200), deadline=None)
@given(numbers=st.lists(st.integers(min_value=-10**6, max_value=10**6), min_size=1, max_size=60))
def test_property_a_sum_is_pythons_sum(tmp_path_factory: pytest.TempPathFactory, numbers: list[int]) -> None:
    ctx = _bare_context(tmp_path_factory.getbasetemp())
    expression = "+".join(str(n) for n in numbers)  # a negative one reads 1+-2: still Python
    result = _calculate(ctx, expression)
    assert result.status == "ok" and result.text == f"{expression} = {sum(numbers)}"
    listed = _calculate(ctx, f"sum({numbers})")
    assert listed.text == f"sum({numbers}) = {sum(numbers)}"
