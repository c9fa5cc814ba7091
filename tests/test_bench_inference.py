"""`agentdeck bench inference`: the real CLI on the embedded model, small figures, run once."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import agentdeck_cmd, subprocess_env, time_left

AGENTS, TOKENS, ROUNDS = 2, 8, 2
SIDES = ("naive", "reference", "engine")


def _cmd(*args: str) -> list[str]:
    """The installed console script (as a user runs it), else `python -m app.cli`."""
    script = Path(sys.executable).with_name("agentdeck")
    return [str(script), *args] if script.exists() else agentdeck_cmd(*args)


def _bench(home: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    # OpenMP threads that spin while they wait make a shared, busy machine crawl (a first
    # decode took 25 s instead of 0.7 s); these tests check the figures' shape, not speed.
    env = subprocess_env(home, OMP_WAIT_POLICY="passive")
    proc = subprocess.run(_cmd("bench", "inference", *args), env=env,
                          capture_output=True, text=True,
                          timeout=time_left() if timeout is None else timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("bench") / "home"
    home.mkdir()
    proc = _bench(home, "--agents", str(AGENTS), "--tokens", str(TOKENS), "--rounds", str(ROUNDS),
                  "--long-prompt", "200", "--json",
                  timeout=280)  # a module fixture runs before the test's clock starts: within its 300 s
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _stats(node: Any) -> Iterator[dict[str, Any]]:
    """Every median/min/max/rounds figure in the report, however deep."""
    if isinstance(node, dict):
        if {"median", "min", "max", "rounds"} <= node.keys():
            yield node
        for value in node.values():
            yield from _stats(value)
    elif isinstance(node, list):
        for value in node:
            yield from _stats(value)


@pytest.mark.timeout(300)
def test_every_side_makes_every_token_each_round_in_a_rotated_order(report: dict[str, Any]) -> None:
    assert report["rounds"] == ROUNDS and report["kv_layout"] in ("unified", "per-slot")
    for side in SIDES:
        assert report[side]["tokens"] == [AGENTS * TOKENS] * ROUNDS, side
        assert all(v > 0 for v in report[side]["tokens_per_s"]["rounds"]), side
    orders = report["orders"]
    assert [sorted(o) for o in orders] == [sorted(SIDES)] * ROUNDS
    assert orders[0][0] != orders[1][0]  # not the same side first every round


@pytest.mark.timeout(300)
def test_medians_lie_within_their_ranges(report: dict[str, Any]) -> None:
    stats = list(_stats(report))
    assert len(stats) > 30  # the walk found the figures
    for s in stats:
        assert len(s["rounds"]) == ROUNDS, s
        assert s["min"] == min(s["rounds"]) and s["max"] == max(s["rounds"]), s
        assert s["min"] <= s["median"] <= s["max"], s
        assert s["median"] == pytest.approx(statistics.median(s["rounds"]), abs=1e-6), s


@pytest.mark.timeout(300)
def test_ratios_are_the_median_of_per_round_ratios(report: dict[str, Any]) -> None:
    engine = report["engine"]["tokens_per_s"]["rounds"]
    for key, other in (("engine_over_naive", "naive"), ("engine_over_reference", "reference")):
        per_round = [e / o for e, o in zip(engine, report[other]["tokens_per_s"]["rounds"], strict=True)]
        assert report[key]["rounds"] == pytest.approx(per_round, abs=1e-3), key
        assert report[key]["median"] == pytest.approx(statistics.median(per_round), abs=1e-3), key


@pytest.mark.timeout(300)
def test_latency_figures_are_ordered_and_present(report: dict[str, Any]) -> None:
    for side in SIDES:
        p50, p99 = report[side]["itl_p50_ms"]["rounds"], report[side]["itl_p99_ms"]["rounds"]
        assert all(0 < a <= b for a, b in zip(p50, p99, strict=True)), side
        assert all(t > 0 for t in report[side]["ttft_s"]["rounds"]), side
    load = report["ttft_under_load"]
    assert load["generations"] == AGENTS
    assert all(t > 0 for t in load["ttft_s"]["rounds"])
    assert all(w <= t for w, t in zip(load["queue_wait_s"]["rounds"], load["ttft_s"]["rounds"], strict=True))
    stall = report["prefill_stall"]
    assert stall["prompt_tokens"] >= 150  # ~200 asked for
    for a, b, c in zip(*(stall[k]["rounds"] for k in ("itl_p50_ms", "itl_p99_ms", "itl_max_ms")), strict=True):
        assert 0 < a <= b <= c
    fair = report["fair_prefill"]
    assert fair["prompts"] == 4 and fair["prompt_tokens"] > stall["prompt_tokens"]  # scaled up from 200
    for a, b, c in zip(*(fair[k]["rounds"] for k in ("ttft_first_s", "ttft_median_s", "ttft_last_s")), strict=True):
        assert 0 < a <= b <= c


@pytest.mark.timeout(300)
def test_turn_taking_agents_find_their_prompt_cached(report: dict[str, Any]) -> None:
    turns = report["turn_taking"]["turns"]
    assert [t["agent"] for t in turns] == ["alpha", "beta"] * 3
    for t in turns[2:]:  # after each agent's first turn, its slot still holds its chat
        cached = t["cached_prompt_tokens"]["min"]
        assert 0 < cached < t["prompt_tokens"], t
        assert cached > report["turn_taking"]["first_prompt_tokens"] // 2, t
    assert report["turn_taking"]["cached_later_min"]["min"] > 0
    cache = report["prefix_cache"]
    assert 0 < cache["cached_prompt_tokens"] < cache["prompt_tokens"]


@pytest.mark.timeout(60)
def test_bad_arguments_give_one_line_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = _bench(home, "--rounds", "0")
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1 and "--rounds" in errors[0], proc.stderr
    proc = _bench(home, "--long-prompt", "ten")
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1 and "--long-prompt" in errors[0], proc.stderr
    # Past argparse: the bench's own checks, one line and nothing else.
    for args in (("--long-prompt", "999999"), ("--model", str(tmp_path / "missing.gguf"))):
        proc = _bench(home, *args)
        assert proc.returncode != 0 and proc.stdout == "", proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.timeout(30)
def test_context_fits_the_longest_sequence_in_either_kv_layout() -> None:
    from app.bench.inference import _context
    from app.bench.inference_scenarios import FAIR_SCALE

    for agents, slots, tokens, long in ((5, 5, 128, 1800), (2, 5, 8, 200), (8, 8, 512, 4000), (1, 4, 1, 1)):
        n_ctx = _context(8192, agents, slots, tokens, long)
        longest = max(round(long * FAIR_SCALE), long, 4 * tokens + 40)
        assert n_ctx // slots > longest  # per-slot layout: each slot holds n_ctx / slots cells
        assert n_ctx >= 4 * round(long * FAIR_SCALE)  # unified: the 4 long prompts at once
