"""The crew end to end on two backends at once: ops thinks with a real OpenAI-compatible
server (llama-cpp-python's, on a loopback port, serving SmolLM2), the other agents with
the embedded engine; `agentdeck run --headless --until-idle` in a real subprocess. Then
the server dies while ops' task runs: that task fails naming the backend, well within its
deadline, and dev's task on the embedded engine still ends done."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AGENTS, agentdeck_cmd, ok, subprocess_env, time_left

from agents.protocol import to_builtins
from agents.store import Store, queries
from tests.openai_server import ALIAS, LlamaCppServer, start_or_skip

OPS_ASK = "How full is the disk?"  # triage and first step by rule (system_health); the rest the model's
DEV_ASK = "Read notes.txt and tell me what it says."  # dev's first step by rule (read_file)
# The remote backend's stall timeout: on a loaded 2-core machine the server may think for a
# minute before its first token; a dead server must fail ops' task well before this.
STALL_S = 180
KILLED_FAILS_WITHIN_S = 30  # a refused connection fails at once; retries=1 backs off 0.5 s
CHAT_POST = re.compile(r"POST /v1/chat/completions")


def write_config(home: Path, ws: Path, url: str) -> None:
    (home / "config.toml").write_text(
        f'workspace = "{ws}"\nschedules = []\n'
        f'[backends.remote]\nkind = "openai"\nurl = "{url}"\nmodel = "{ALIAS}"\n'
        f'connect_timeout_s = 2\nstall_timeout_s = {STALL_S}\nretries = 1\n'
        '[agents.ops]\nmodel = "remote"\n')
    (ws / "notes.txt").write_text("The release is on Friday.\n")


def task_status(home: Path, task_id: int) -> tuple[str, str]:
    with Store.open(home / "agentdeck.db", AGENTS) as store:
        task = store.read(queries.task, task_id)
    assert task is not None
    return task.status, task.result or ""


def usage_rows(store: Store, agent: str, task_id: int) -> int:
    return store.read(lambda c: c.execute(
        "SELECT count(*) FROM inference_usage WHERE agent = ? AND task_id = ?", (agent, task_id)).fetchone()[0])


def steps(store: Store, task_id: int) -> list[dict]:
    events = store.read(queries.events_after, 0, 100_000)
    return [to_builtins(e.payload) for e in events if e.subject == f"task:{task_id}" and e.kind == "agent.step"]


@pytest.fixture
def server() -> Iterator[LlamaCppServer]:
    srv = start_or_skip()  # fails instead of skipping under CI=true
    yield srv
    srv.stop()


@pytest.mark.timeout(600)
def test_ops_on_a_remote_server_and_dev_on_the_embedded_engine(home: Path, ws: Path,
                                                               server: LlamaCppServer) -> None:
    write_config(home, ws, server.url)
    ops_task = int(ok(home, "send", "--to", "ops", OPS_ASK).strip())
    dev_task = int(ok(home, "send", "--to", "dev", DEV_ASK).strip())
    proc = subprocess.run(agentdeck_cmd("run", "--headless", "--until-idle"), env=subprocess_env(home),
                          capture_output=True, text=True, timeout=time_left())
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = server.log_tail(200_000)
    with Store.open(home / "agentdeck.db", AGENTS) as store:
        ops, dev = store.read(queries.task, ops_task), store.read(queries.task, dev_task)
        # The task ends. SmolLM2-135M's answer may be refused by the grounding rules (a figure
        # no tool showed): that ending is the model's, never the backend's.
        assert ops is not None and ops.status in ("done", "failed"), (ops, proc.stdout[-3000:])
        assert ops.status == "done" or "backend" not in (ops.result or ""), ops.result
        assert dev is not None and dev.status == "done", (dev, proc.stdout[-3000:])
        ops_steps = steps(store, ops_task)
        ops_calls = usage_rows(store, "ops", ops_task)
        dev_calls = usage_rows(store, "dev", dev_task)
    # A tool call went through the gate, then the model (on the server) answered.
    assert ops_steps[0]["tool"] == "system_health" and ops_steps[0]["status"] == "ok", ops_steps
    assert len(ops_steps) >= 2, ops_steps  # the model, on the server, decided what came after
    if ops.status == "done":
        assert ops_steps[-1]["status"] == "final" and ops.result and ops.result.strip(), ops_steps
    # The server served ops' calls, and only those: dev's went to the embedded engine.
    posts = len(CHAT_POST.findall(log))
    assert ops_calls >= 1 and dev_calls >= 1, (ops_calls, dev_calls)
    assert posts == ops_calls, (posts, ops_calls, log[-2000:])


@pytest.mark.timeout(600)
def test_the_server_killed_fails_ops_task_naming_the_backend_and_dev_finishes(
        home: Path, ws: Path, server: LlamaCppServer) -> None:
    write_config(home, ws, server.url)
    ops_task = int(ok(home, "send", "--to", "ops", OPS_ASK).strip())
    dev_task = int(ok(home, "send", "--to", "dev", DEV_ASK).strip())
    run = subprocess.Popen(agentdeck_cmd("run", "--headless", "--until-idle"), env=subprocess_env(home),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # ops' system_health has run: its next call is the server's. Kill it then.
        give_up = time.monotonic() + (time_left() or 300) / 2
        while not CHAT_POST.search(server.log_tail(200_000)):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < give_up, "ops never called the server"
            time.sleep(0.1)
        server.kill()
        killed_at = time.monotonic()
        while task_status(home, ops_task)[0] not in ("failed", "done"):
            assert time.monotonic() - killed_at < KILLED_FAILS_WITHIN_S, "ops' task outlived the server"
            assert run.poll() is None, run.communicate()
            time.sleep(0.2)
        failed_after = time.monotonic() - killed_at
        out, err = run.communicate(timeout=time_left())
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert run.returncode == 0, err[-2000:]
    status, reason = task_status(home, ops_task)
    assert status == "failed" and "backend remote" in reason, (status, reason)
    assert failed_after < KILLED_FAILS_WITHIN_S, failed_after
    dev_status, dev_result = task_status(home, dev_task)
    assert dev_status == "done", (dev_status, dev_result, out[-3000:])
