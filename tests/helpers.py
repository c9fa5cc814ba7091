"""Helpers the test files share: plain functions and constants (fixtures live in conftest.py).

Imported as `from helpers import ...` (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

from hypothesis import settings

from agents.config import DEFAULT_AGENTS
from agents.protocol import Task, to_builtins
from agents.runtime import Host
from agents.store import AsyncStore, Store, queries
from agents.tools import TOOLS, ToolResult, invoke
from agents.tools.base import AgentStore, SandboxSettings, ToolContext

AGENTS = tuple(DEFAULT_AGENTS)  # lead, dev, review, ops, scribe
REPO = Path(__file__).resolve().parent.parent


def examples(count: int) -> int:
    """A property's example count: `count`, or the profile's when larger (deep)."""
    return max(count, settings.default.max_examples)


# --- time: one budget per test, from its own @pytest.mark.timeout ---

# When the running test times out (monotonic clock); conftest's autouse fixture sets it from
# the test's mark, else --timeout / the ini default. None: the test has no timeout.
_test_deadline: float | None = None


def start_test_clock(timeout_s: float | None) -> None:
    """Called by conftest as each test starts."""
    global _test_deadline
    _test_deadline = time.monotonic() + timeout_s if timeout_s else None


def time_left(margin: float = 0.1) -> float | None:
    """Seconds a subprocess may take: what is left of the running test's timeout, less a
    margin (a fraction of what is left, at least 3 s) so the subprocess is stopped, with its
    output in the failure, before pytest-timeout kills the whole test. None: no limit."""
    if _test_deadline is None:
        return None
    left = _test_deadline - time.monotonic()
    return max(1.0, left - max(3.0, left * margin))


# --- the real CLI in a subprocess ---


def agentdeck_cmd(*args: str) -> list[str]:
    """argv for running the real CLI in a subprocess."""
    return [sys.executable, "-m", "app.cli", *args]


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AGENTDECK_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        agentdeck_cmd(*args), env=subprocess_env(home, **env), input=stdin,
        capture_output=True, text=True, timeout=time_left(),
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(home: Path, *args: str, **env: str) -> str:
    proc = run(home, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- the crew in-process ---


def reflect(lesson: str) -> str:
    """A scripted reflection output that passes the reflection schema."""
    return json.dumps({"outcome": "success", "lesson": lesson, "importance": 2, "tags": []})


async def until(check: Callable[[], object], within: float = 20.0) -> None:
    """Await the async `check` until it is true, failing after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():  # type: ignore[misc]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def finished(host: Host, task_id: int) -> Task:
    """Wait for the task to end (done or failed) and return it."""
    async def done() -> bool:
        task = await host.store.read(queries.task, task_id)
        return task is not None and task.status in ("done", "failed")

    await until(done)
    task = await host.store.read(queries.task, task_id)
    assert task is not None
    return task


# --- tools ---


def context(store: AsyncStore, ws: Path, agent: str = "dev", task_id: int | None = None) -> ToolContext:
    return ToolContext(agent=agent, workspace=ws, home=ws.parent / "home", store=AgentStore(store, agent),
                       sandbox=SandboxSettings(mode="off", bwrap=None), task_id=task_id)


async def call(ctx: ToolContext, tool: str, **args: object) -> ToolResult:
    result, _ = await invoke(TOOLS[tool], ctx, args)
    return result


# --- as a user who is not root ---

UNPRIVILEGED = "nobody"  # whom a test that runs as root becomes, for checks that root would pass


def unprivileged_dir() -> Path:
    """A fresh directory that UNPRIVILEGED owns and can reach (pytest's tmp_path sits in
    directories private to root), under the system's temp dir; the caller removes it."""
    import pwd
    import tempfile

    user = pwd.getpwnam(UNPRIVILEGED)
    made = Path(tempfile.mkdtemp(prefix="agentdeck-test-"))
    os.chown(made, user.pw_uid, user.pw_gid)
    return made


def as_unprivileged(check: Callable[[], str], within: float = 30.0) -> str:
    """`check()`'s answer, computed as a user who is not root: when running as root, in a
    forked child that drops to UNPRIVILEGED first (a fork, not a new interpreter: the venv's
    Python may live where that user cannot reach; what check needs must already be imported);
    otherwise here, as this user. An exception in the child comes back as its type and text."""
    if os.geteuid() != 0:
        return check()
    import pwd
    import select
    import signal

    user = pwd.getpwnam(UNPRIVILEGED)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, answer, and leave without cleanup
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            answer = check()
        except BaseException as err:  # any failure is reported to the parent, which fails the test
            answer, code = f"{type(err).__name__}: {err}", 1
        try:
            os.write(write_end, answer.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        chunks = []
        while True:
            ready, _, _ = select.select([read_end], [], [], within)
            assert ready, f"the unprivileged check gave no answer within {within} s"
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still running: it gave up answering
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return b"".join(chunks).decode()


# --- what the real model did ---


def model_work(store: Store, task_id: int, tools: Collection[str]) -> list[dict]:
    """Checks that the task's work was the model's, and returns its steps (the agent.step
    payloads): its triage by the model; every step a tool of `tools` or a non-empty final
    answer, the last one final; and a model call served (with tokens) for each triage, step
    and reflection the model made. For tasks that the rules answer nothing of (no triage
    rule, no first step by rule: the caller checks that with agents.crew.rules)."""
    events = [e for e in store.read(queries.events_after, 0, 100_000) if e.subject == f"task:{task_id}"]
    phases = [(e.kind, to_builtins(e.payload)) for e in events if e.kind.startswith("agent.")]
    triages = [p for k, p in phases if k == "agent.triage"]
    steps = [p for k, p in phases if k == "agent.step"]
    reflections = [p for k, p in phases if k == "agent.reflect"]
    assert triages and all(t["by"] == "model" for t in triages), phases
    assert triages[-1]["action"] == "act", phases  # what the steps below need
    assert steps, f"the model made no step: {phases}"
    for step in steps:
        assert step["tool"] in tools or (step["status"] == "final" and step["summary"].strip()), step
    assert steps[-1]["status"] == "final", steps
    calls, tokens = store.read(lambda c: c.execute(
        "SELECT count(*), coalesce(sum(completion_tokens), 0) FROM inference_usage WHERE task_id = ?",
        (task_id,)).fetchone())
    made = len(triages) + len(steps) + sum(r["by"] == "model" for r in reflections)
    assert calls >= made and tokens > 0, (calls, tokens, phases)
    return steps


def require_bwrap(what: str = "sandboxed commands") -> None:
    """Skip where bubblewrap is truly absent; under CI that fails instead: a sandbox test
    must never pass unrun, nor run its commands unsandboxed."""
    import pytest

    from agents.tools.shell import find_bwrap

    if find_bwrap() is None:
        if os.environ.get("CI"):
            pytest.fail(f"bubblewrap (bwrap) is missing: {what} must run sandboxed here")
        pytest.skip("bubblewrap (bwrap) is not installed")
