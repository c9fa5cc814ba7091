"""The bench harness (app/bench/harness.py): the order sides run in, medians and ranges,
the common options; and the bench registry, one shape for every bench."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest
from conftest import REPO

from app.args import Parser
from app.bench import BENCHES, harness


def test_two_sides_alternate_which_goes_first() -> None:
    assert [harness.order(("A", "B"), r) for r in range(4)] == [
        ["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]


def test_three_sides_rotate_so_each_goes_first_and_last_once_per_cycle() -> None:
    orders = [harness.order(["naive", "reference", "engine"], r) for r in range(3)]
    assert orders == [["naive", "reference", "engine"], ["reference", "engine", "naive"],
                      ["engine", "naive", "reference"]]
    assert {o[0] for o in orders} == {o[-1] for o in orders} == {"naive", "reference", "engine"}
    assert harness.order(["x"], 7) == ["x"] and harness.order([], 3) == []


def test_order_leaves_its_input_alone() -> None:
    sides = ["A", "B", "C"]
    harness.order(sides, 1)
    assert sides == ["A", "B", "C"]


def test_spread_of_an_odd_count_is_the_middle_value_and_its_range() -> None:
    assert harness.spread([9.0, 1.0, 4.0]) == (4.0, 1.0, 9.0)
    s = harness.spread(iter([3.5]))  # any iterable, one round
    assert (s.median, s.low, s.high) == (3.5, 3.5, 3.5)


def test_spread_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    s = harness.spread([10.0, 2.0, 4.0, 100.0])
    assert s.median == 7.0 and s.low == 2.0 and s.high == 100.0


def test_spread_of_nothing_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        harness.spread([])


def _parser(**common: object) -> argparse.ArgumentParser:
    p = Parser(prog="bench x")
    harness.add_common(p, **common)  # type: ignore[arg-type]
    return p


def test_common_options_only_where_asked() -> None:
    bare = _parser().parse_args([])
    assert vars(bare) == {"json": False}
    full = _parser(rounds=4, model=True).parse_args(["--json", "--model", "m.gguf"])
    assert vars(full) == {"json": True, "rounds": 4, "model": "m.gguf"}
    assert _parser(rounds=4).parse_args(["--rounds", str(harness.MAX_ROUNDS)]).rounds == harness.MAX_ROUNDS


@pytest.mark.parametrize("bad", ["0", str(harness.MAX_ROUNDS + 1), "-1", "two", "1_0"])
def test_rounds_out_of_range_is_a_one_line_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser(rounds=3).parse_args(["--rounds", bad])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--rounds" in errors[0], errors


def test_every_bench_has_the_one_shape() -> None:
    assert set(BENCHES) == {"bus", "checkpoint", "crew", "inference", "kv", "policy", "recall", "sampling", "tui"}
    for name, path in BENCHES.items():
        module = importlib.import_module(path)
        assert isinstance(module.HELP, str) and module.HELP, name
        assert callable(module.run), name
        p = Parser(prog=f"bench {name}")
        module.add_arguments(p)
        args = p.parse_args([])
        assert args.json is False, name
        # A bench that loads a chat model takes --model; one that repeats takes --rounds
        # (recall's hit@3 is the same every time: one pass over fixed memories and queries).
        assert ("model" in vars(args)) == (name not in ("bus", "policy", "recall", "checkpoint")), name
        assert ("rounds" in vars(args)) == (name not in ("bus", "recall")), name


@pytest.mark.timeout(60)
def test_building_the_command_line_imports_no_textual() -> None:
    code = ("import sys\nfrom app.cli import build_parser\n"
            "p = build_parser()\np.parse_args(['bench', 'tui', '--rounds', '2'])\n"
            "print(sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
