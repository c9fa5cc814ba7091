"""`agentdeck bench inference` on other backends: --vs-server (the embedded engine against a
real llama_cpp.server on the same SmolLM2, tiny: one round, few tokens), --backend NAME on
a real server, and the one-line errors. The figures' shape is checked, never their speed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import agentdeck_cmd, one_line_error, subprocess_env, time_left

from app.bench.llama_cpp_server import missing
from tests.openai_server import ALIAS, server_unavailable, start_or_skip

TINY = ("--agents", "1", "--tokens", "4", "--rounds", "1", "--long-prompt", "32", "--json")


def bench(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Passive OpenMP waits: a shared, busy machine otherwise crawls (see test_bench_inference).
    proc = subprocess.run(agentdeck_cmd("bench", *args), env=subprocess_env(home, OMP_WAIT_POLICY="passive"),
                          capture_output=True, text=True, timeout=time_left())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def positive(stat: dict[str, Any]) -> bool:
    return stat["median"] > 0 and all(v > 0 for v in stat["rounds"])


@pytest.mark.timeout(300)
def test_vs_server_reports_both_sides_and_their_ratios(home: Path) -> None:
    reason = missing()
    if reason:
        server_unavailable(reason)  # fails under CI=true
    proc = bench(home, "inference", "--vs-server", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["server"].startswith("llama_cpp.server ")
    sides = (report["engine"], report["llama_cpp_server"])
    for side in sides:
        assert side["tokens"][0] > 0
        for figure in ("tokens_per_s", "ttft_s", "turn_ttft_first_s", "turn_ttft_later_s"):
            assert positive(side[figure]), (figure, side)
        assert [a["agent"] for a in side["agents"]] == ["alpha", "beta"]
    engine, server = sides
    assert engine["usage_reported"] is True
    assert all(a["cached_prompt_tokens"]["median"] > 0 for a in engine["agents"])  # its prefix kept
    if not server["usage_reported"]:  # llama-cpp-python 0.3.36: no usage in a stream, so no figure
        assert all(a["cached_prompt_tokens"] is None for a in server["agents"])
    ratios = report["engine_over_server"]
    for figure in ("tokens_per_s", "ttft_s", "turn_ttft_later_s"):
        want = engine[figure]["rounds"][0] / server[figure]["rounds"][0]
        assert ratios[figure]["rounds"][0] == pytest.approx(want, abs=1e-3), figure


@pytest.mark.timeout(300)
def test_bench_inference_runs_on_a_configured_server_backend(home: Path) -> None:
    server = start_or_skip()  # fails instead of skipping under CI=true
    try:
        (home / "config.toml").write_text(
            f'[backends.srv]\nkind = "openai"\nurl = "{server.url}"\nmodel = "{ALIAS}"\n'
            'max_concurrent = 2\nstall_timeout_s = 240\n')
        proc = bench(home, "inference", "--backend", "srv", *TINY)
        log = server.log_tail(200_000)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["backend"] == "srv"
    assert report["naive"] is None and report["reference"] is None  # they load the model here
    assert report["engine"]["tokens"][0] > 0 and positive(report["engine"]["tokens_per_s"])
    assert len(report["turn_taking"]["turns"]) == 6
    assert "POST /v1/chat/completions" in log  # the requests went to the server


@pytest.mark.parametrize("what", ["inference", "crew"])
def test_an_unknown_backend_is_a_one_line_error(home: Path, what: str) -> None:
    proc = bench(home, what, "--backend", "nosuch")
    assert proc.returncode != 0
    assert "no backend named 'nosuch'" in one_line_error(proc)


def test_vs_server_on_a_server_backend_is_a_one_line_error(home: Path) -> None:
    (home / "config.toml").write_text(
        '[backends.srv]\nkind = "openai"\nurl = "http://127.0.0.1:9/v1"\nmodel = "m"\n')
    proc = bench(home, "inference", "--vs-server", "--backend", "srv")
    assert proc.returncode != 0
    assert "backend srv is a server" in one_line_error(proc)
