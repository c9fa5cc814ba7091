"""Crash: a real writer process killed with SIGKILL mid-stream loses nothing it committed.

tests/crash_writer.py writes tasks and tool calls in a loop, with a durable bus reader that
consumes the log; it prints each fact only after it is committed. We kill it with SIGKILL at
an arbitrary moment (possibly inside a transaction) and then check, on the reopened file:
every reported row and its events are there, event ids have no gaps, the database is intact,
the reader resumes from its saved cursor without a gap or a skip, and tool calls left
running are marked interrupted and reported.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.bus import Bus
from agents.protocol import OWNER, SYSTEM, ToolFinished
from agents.store import AsyncStore, Store, queries
from agents.store.reducers import create_task, interrupt_running_tool_calls
from tests.conftest import AGENTS, REPO, agentdeck_cmd, subprocess_env

WRITER = Path(__file__).with_name("crash_writer.py")
READER = "crash-reader"
WAIT_S = 30.0


class Child:
    """The writer process and everything it printed (read on a thread)."""

    def __init__(self, db_path: Path, home: Path, stall_after: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db_path), str(stall_after)], cwd=REPO,
            env=subprocess_env(home),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    def ids(self, tag: str) -> list[int]:
        return [int(line.split()[1]) for line in list(self.lines) if line.startswith(tag + " ")]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def saved_cursor(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT last_event_id FROM cursors WHERE name = ?", (READER,)).fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


def run_and_kill(db_path: Path, home: Path, min_tasks: int, stall_after: int) -> Child:
    """Start the writer, let it commit at least `min_tasks` tasks and save its reader's
    cursor (with a stalled reader: the cursor of everything it acked), then SIGKILL it
    wherever it is."""
    child = Child(db_path, home, stall_after)
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            if child.proc.poll() is not None:
                pytest.fail(f"the writer exited early ({child.proc.returncode}): {child.stderr()}")
            cursor = saved_cursor(db_path)
            stalled = len(child.ids("CONSUMED")) == stall_after and cursor == stall_after - 1
            if len(child.ids("TASK")) >= min_tasks and cursor > 0 and (stalled or not stall_after):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"timed out: {len(child.ids('TASK'))} tasks, "
                            f"{len(child.ids('CONSUMED'))} consumed, saved cursor {cursor}")
            time.sleep(0.02)
    finally:
        child.kill()
    assert child.proc.returncode == -signal.SIGKILL
    return child


@pytest.mark.parametrize("min_tasks, stall_after", [(300, 0), (1500, 0), (600, 120)],
                         ids=["early", "late", "stalled-reader"])
async def test_sigkill_loses_nothing_committed(
    db_path: Path, home: Path, min_tasks: int, stall_after: int
) -> None:
    """stalled-reader: the reader stops after 120 events without acking the last one while
    the bus has already queued more; its cursor must be exactly 119, not what was queued."""
    child = run_and_kill(db_path, home, min_tasks, stall_after)
    tasks, calls, consumed = child.ids("TASK"), child.ids("CALL"), child.ids("CONSUMED")
    assert len(tasks) >= min_tasks and calls and consumed

    # --- the file: intact, every reported row there with its events, no gaps -------------
    store = Store.open(db_path, AGENTS)
    try:
        assert [tuple(r) for r in store.conn.execute("PRAGMA integrity_check")] == [("ok",)]
        assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        ids = [r[0] for r in store.conn.execute("SELECT id FROM events ORDER BY id")]
        assert ids == list(range(1, len(ids) + 1)), "event ids have a gap"
        events = store.read(queries.events_after, 0, 1_000_000)  # every payload decodes
        subjects = {(e.kind, e.subject) for e in events}
        for task_id in tasks:
            assert store.read(queries.task, task_id) is not None, f"task {task_id} lost"
            assert ("task.created", f"task:{task_id}") in subjects
        for call_id in calls:
            assert ("tool.started", f"tool_call:{call_id}") in subjects
        running = {c.id for c in store.read(queries.tool_calls, status="running")}
        assert set(calls) <= running
        # The child may have died between a commit and its print: at most one such row.
        assert len(store.read(queries.tasks)) - len(tasks) in (0, 1)
        head = ids[-1]
    finally:
        store.close()

    # --- the durable reader: what it had acked is saved, never more --------------------
    assert consumed == list(range(1, len(consumed) + 1)), "the reader itself saw a gap"
    cursor = saved_cursor(db_path)
    assert 0 < cursor <= consumed[-1], "a saved cursor ahead of what the consumer finished"
    if stall_after:
        assert len(consumed) == stall_after and cursor == consumed[-2]

    astore = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe(READER, maxsize=8)
        resumed = [await asyncio.wait_for(sub.get(), WAIT_S) for _ in range(head - cursor)]
        assert [e.id for e in resumed] == list(range(cursor + 1, head + 1)), "resume gap or skip"
        # Together: every event once after de-duplication, the overlap being the unacked tail.
        seen = sorted(set(consumed) | {e.id for e in resumed})
        assert seen == list(range(1, head + 1))

        # --- recovery: running tool calls are interrupted, reported, never re-run ---
        interrupted = await astore.write(interrupt_running_tool_calls, SYSTEM)
        assert {c.id for c in interrupted} == running
        reported = [await asyncio.wait_for(sub.get(), WAIT_S) for _ in interrupted]
        assert [e.payload.call_id for e in reported] == [c.id for c in interrupted]  # type: ignore[union-attr]
        for event in reported:
            assert isinstance(event.payload, ToolFinished) and event.payload.status == "interrupted"
            assert event.actor == SYSTEM and event.recipient in AGENTS
        assert await astore.read(queries.tool_calls, status="running") == []
        assert await astore.write(interrupt_running_tool_calls, SYSTEM) == []
    finally:
        await bus.close()
        await astore.close()


def test_a_kill_during_a_write_transaction_leaves_the_previous_state(db_path: Path, home: Path) -> None:
    """A process killed while it holds the write lock, with rows written but not committed:
    none of them survive, and the next writer is not blocked by a stale lock."""
    Store.open(db_path, AGENTS).close()
    script = (
        "import os, signal, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "for i in range(500):\n"
        "    conn.execute(\"INSERT INTO events (ts, kind, actor, subject, payload) "
        "VALUES (0, 'x', 'system', '', x'00')\")\n"
        "os.write(1, b'HOLDING\\n')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    before = Store.open(db_path, AGENTS)
    try:
        head = before.read(queries.last_event_id)
    finally:
        before.close()
    proc = subprocess.run([sys.executable, "-c", script, str(db_path)], env=subprocess_env(home),
                          capture_output=True, timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL and b"HOLDING" in proc.stdout
    store = Store.open(db_path, AGENTS)
    try:
        assert store.read(queries.last_event_id) == head
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        t = store.write(create_task, OWNER, "after the crash")  # the lock is free
        assert store.read(queries.last_event_id) == head + 1
        assert store.read(queries.task, t.id).title == "after the crash"  # type: ignore[union-attr]
    finally:
        store.close()


# --- whose calls recovery claims ---

OWNED_CALL = (
    "import os, sys\n"
    "from agents.store import Store\n"
    "from agents.store.reducers import start_tool_call\n"
    "store = Store.open(sys.argv[1], ('lead', 'dev', 'review', 'ops', 'scribe'))\n"
    "call = store.write(start_tool_call, 'ops', 'system_health', {})\n"
    "os.write(1, f'CALL {call.id}\\n'.encode())\n"
    "sys.stdin.read()\n"  # runs until killed
)


def _calls(db_path: Path) -> dict[int, str]:
    with Store.open(db_path, AGENTS) as store:
        return {c.id: c.status for c in store.read(queries.tool_calls)}


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_recovery_interrupts_a_dead_process_s_call_and_leaves_a_live_tool_run_alone(
        home: Path, db_path: Path, tmp_path: Path) -> None:
    """An instance starting beside a running `agentdeck tool run` must not claim its call
    (it used to: the command ran, then `tool run` failed "already interrupted" and its output
    was lost); the call of a process killed with -9 is interrupted."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (home / "config.toml").write_text(f'workspace = "{ws}"\nsandbox = "off"\n')
    gate = ws / "gate"
    os.mkfifo(gate)  # `cat gate` blocks until the test writes: the call runs as long as we say
    env = subprocess_env(home)
    subprocess.run(agentdeck_cmd("rules", "add", "dev", "run_shell", "cat gate", "allow"), env=env,
                   check=True, capture_output=True, timeout=WAIT_S)

    dead = subprocess.Popen([sys.executable, "-c", OWNED_CALL, str(db_path)], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert dead.stdout is not None
    dead_id = int(dead.stdout.readline().split()[1])
    dead.kill()
    dead.wait(timeout=WAIT_S)

    tool_run = subprocess.Popen(agentdeck_cmd("tool", "run", "dev", "run_shell", '{"command": "cat gate"}'),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    instance = None
    try:
        _wait_until(lambda: len(_calls(db_path)) == 2 or tool_run.poll() is not None, "tool run's call")
        [live_id] = set(_calls(db_path)) - {dead_id}
        instance = subprocess.Popen(agentdeck_cmd("run", "--headless"), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        assert instance.stdout is not None
        said: list[str] = []
        for text in instance.stdout:  # recovery is over once it says it is running
            said.append(text)
            if "agentdeck running" in text:
                break
        assert any(f"tool call {dead_id} (ops system_health) was interrupted" in s for s in said), said
        assert not any(f"tool call {live_id} " in s for s in said), said
        assert tool_run.poll() is None  # still blocked in `cat`: recovery ran while it was running
        assert _calls(db_path) == {dead_id: "interrupted", live_id: "running"}

        fd = os.open(gate, os.O_WRONLY)  # cat has it open for reading
        os.write(fd, b"finished after the instance started\n")
        os.close(fd)
        out, err = tool_run.communicate(timeout=WAIT_S)
        assert tool_run.returncode == 0, err
        assert "finished after the instance started" in out and "interrupted" not in out + err
        assert _calls(db_path) == {dead_id: "interrupted", live_id: "ok"}
    finally:
        for proc in (tool_run, instance):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT_S)
