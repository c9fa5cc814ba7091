"""`agentdeck run` as a real process: recovery, headless approval policy, signals."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import AGENTS, REPO, agentdeck_cmd, ok, subprocess_env

from agents.protocol import SYSTEM
from agents.store import Store, queries
from agents.store import reducers as r


class Running:
    """An instance whose stdout is read on a thread, so waits can time out."""

    def __init__(self, home: Path, *args: str, argv: list[str] | None = None,
                 stderr: int = subprocess.STDOUT, **env: str) -> None:
        self.proc = subprocess.Popen(
            argv or agentdeck_cmd("run", "--headless", *args), env=subprocess_env(home, **env),
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue(maxsize=10_000)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line)

    def wait_for(self, text: str, timeout: float = 15) -> str:
        """The first line (printed so far or later) containing `text`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if text in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not printed; got {self.lines}")
            try:
                self.lines.append(self._new.get(timeout=left))
            except queue.Empty:
                continue

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


@pytest.fixture
def start(home: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def _start(*args: str, **env: str) -> Running:
        inst = Running(home, *args, **env)
        started.append(inst)
        inst.wait_for("agentdeck running")
        return inst

    yield _start
    for inst in started:
        if inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def approval_status(db_path: Path, approval_id: int) -> tuple[str, str | None]:
    with Store.open(db_path, AGENTS) as store:
        a = store.read(queries.approval, approval_id)
    assert a is not None
    return a.status, a.decided_by


def ask(db_path: Path) -> int:
    with Store.open(db_path, AGENTS) as store:
        return store.write(
            r.request_approval, "dev", "run_shell", {"cmd": "make"}, "make", "build", timeout_s=600
        ).id


def test_status_sees_the_instance_and_sigterm_stops_it(home: Path, start: Callable[..., Running]) -> None:
    inst = start()
    status = json.loads(ok(home, "status", "--json"))
    assert status["instance"]["pid"] == inst.proc.pid
    # The engine's meter, published with the heartbeat: no GPU here is a normal state.
    def meter() -> dict | None:
        return json.loads(ok(home, "status", "--json"))["slots"]

    # While the model loads the meter says "starting"; then it lists the slots.
    wait_until(lambda: (meter() or {}).get("state") == "ready")
    slots = meter()
    assert slots is not None
    assert slots["device"] == "CPU" and slots["gpu"] is None
    assert [s["index"] for s in slots["slots"]] == [0, 1, 2, 3, 4]
    assert slots["kv_total"] >= 8192
    second = subprocess.run(agentdeck_cmd("run"), env=subprocess_env(home), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "another agentdeck instance" in second.stderr
    assert inst.stop(signal.SIGTERM) == 0
    assert json.loads(ok(home, "status", "--json"))["instance"] is None


def test_instance_reports_events_written_by_the_cli(home: Path, start: Callable[..., Running]) -> None:
    inst = start("--json")
    task_id = int(ok(home, "send", "--to", "ops", "check disk"))
    line = inst.wait_for('"task.created"', timeout=5)
    assert json.loads(line)["payload"]["task"]["id"] == task_id
    assert inst.stop() == 0


def test_headless_deny_policy_denies_new_requests(db_path: Path, start: Callable[..., Running]) -> None:
    inst = start()  # --approvals deny is the default
    approval_id = ask(db_path)
    wait_until(lambda: approval_status(db_path, approval_id)[0] != "pending")
    assert approval_status(db_path, approval_id) == ("denied", "headless_policy")
    assert inst.stop() == 0


def test_headless_cli_policy_waits_for_agentdeck_approve(
    home: Path, db_path: Path, start: Callable[..., Running]
) -> None:
    inst = start("--approvals", "cli")
    approval_id = ask(db_path)
    # The instance has read the request (it reports it, with the commands that answer it):
    # its policy had the same event, and under cli it must leave it to the person.
    inst.wait_for(f"agentdeck approve {approval_id} / agentdeck deny {approval_id}", timeout=10)
    assert approval_status(db_path, approval_id) == ("pending", None)
    ok(home, "approve", str(approval_id))
    assert approval_status(db_path, approval_id) == ("approved", "user")
    assert inst.stop() == 0


def test_unanswered_approvals_expire_as_timeout(db_path: Path, start: Callable[..., Running]) -> None:
    inst = start("--approvals", "cli")
    with Store.open(db_path, AGENTS) as store:
        approval_id = store.write(
            r.request_approval, "dev", "run_shell", {"cmd": "x"}, "x", "why", timeout_s=0.5
        ).id
    wait_until(lambda: approval_status(db_path, approval_id)[0] != "pending")
    assert approval_status(db_path, approval_id) == ("expired", "timeout")
    assert inst.stop() == 0


def test_restart_after_kill_9_recovers(home: Path, db_path: Path, start: Callable[..., Running]) -> None:
    inst = start("--approvals", "cli")
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, "owner", "build", owner="dev")
        call = store.write(r.start_tool_call, "dev", "run_shell", {"cmd": "make"}, task_id=task.id)
        # The instance's own call (recovery leaves a live process's calls alone).
        import psutil
        store.conn.execute("UPDATE tool_calls SET owner_pid = ?, owner_started = ? WHERE id = ?",
                           (inst.proc.pid, psutil.Process(inst.proc.pid).create_time(), call.id))
        pending = store.write(r.request_approval, "dev", "run_shell", {"cmd": "make"}, "make", "b", timeout_s=600)
        store.write(r.set_schedule, "ops", "ops", "nightly", 3600, first_run_at=time.time() - 3 * 3600)
    os.kill(inst.proc.pid, signal.SIGKILL)
    inst.proc.wait()

    # The dead instance's row (heartbeat still fresh) does not block the restart.
    again = start("--approvals", "cli")
    again.wait_for(f"tool call {call.id} (dev run_shell) was interrupted")
    again.wait_for("1 approval(s) pending")
    with Store.open(db_path, AGENTS) as store:
        calls = store.read(queries.tool_calls)
        assert [(c.id, c.status) for c in calls] == [(call.id, "interrupted")]
        assert store.read(queries.approval, pending.id).status == "pending"  # type: ignore[union-attr]
        scheduled = [t for t in store.read(queries.tasks, owner="ops")]
        # Three missed runs collapse into one.
        assert len(scheduled) == 1 and scheduled[0].title.startswith("[nightly]")
        assert store.read(queries.due_schedules, time.time()) == []
        assert SYSTEM in {e.actor for e in store.read(queries.events_after, 0)}
    assert again.stop() == 0


def test_run_with_a_missing_model_is_exit_2(home: Path) -> None:
    proc = subprocess.run(
        agentdeck_cmd("run", "--model", str(home / "missing.gguf")), env=subprocess_env(home),
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing.gguf" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(ok(home, "status", "--json"))["instance"] is None


def test_a_long_lock_does_not_kill_the_instance(home: Path, db_path: Path, start: Callable[..., Running]) -> None:
    """Heartbeat, expiry and schedules fail while another process holds the write lock past
    the busy timeout; once it is released they carry on, and SIGTERM still stops cleanly."""
    inst = start("--approvals", "cli")
    blocker = sqlite3.connect(db_path, timeout=10)
    blocker.execute("BEGIN IMMEDIATE")
    time.sleep(6.5)  # > the 5 s busy timeout
    blocker.rollback()
    blocker.close()
    approval_id = ask(db_path)
    with Store.open(db_path, AGENTS) as store:
        store.write(r.set_schedule, "ops", "ops", "tick", 3600, first_run_at=time.time() - 1)
    # Still alive and working: the schedule fires and the heartbeat is fresh again.
    wait_until(lambda: len(json.loads(ok(home, "tasks", "--json", "--owner", "ops"))) == 1, timeout=10)
    wait_until(lambda: json.loads(ok(home, "status", "--json"))["instance"] is not None, timeout=10)
    assert approval_status(db_path, approval_id) == ("pending", None)
    assert inst.stop() == 0
    assert "Traceback" not in "".join(inst.lines)


def test_an_instance_that_lost_its_row_stops(db_path: Path, start: Callable[..., Running]) -> None:
    inst = start()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE instance SET pid = 999999, heartbeat_at = ? WHERE id = 1", (time.time(),))
    conn.commit()
    conn.close()
    assert inst.proc.wait(timeout=10) == 1
    inst.wait_for("claim lost")


# --- hardening: signals, zombies, broken schedules, the WAL, hostile text ---


def test_sighup_stops_cleanly_and_releases_the_row(home: Path, db_path: Path, start: Callable[..., Running]) -> None:
    inst = start()
    assert inst.stop(signal.SIGHUP) == 0
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.instance) is None
    assert json.loads(ok(home, "status", "--json"))["instance"] is None


def test_a_zombie_of_a_killed_instance_does_not_block_a_restart(db_path: Path, start: Callable[..., Running]) -> None:
    import psutil

    first = start()
    first.proc.send_signal(signal.SIGKILL)
    wait_until(lambda: psutil.Process(first.proc.pid).status() == psutil.STATUS_ZOMBIE)
    # Not reaped: `kill -0` still succeeds on it, and its heartbeat is fresh.
    second = start()
    assert f"pid {second.proc.pid}" in second.wait_for("agentdeck running")
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.instance)["pid"] == second.proc.pid
    first.proc.wait()


def test_a_schedule_that_cannot_fire_is_marked_and_the_instance_runs(
    home: Path, db_path: Path, start: Callable[..., Running]
) -> None:
    """The audit's case: an interval of 5e-324 (stored before the checks) made every
    start fail with OverflowError."""
    with Store.open(db_path, AGENTS) as store:
        bad = store.write(r.set_schedule, "owner", "ops", "bad", 60, first_run_at=1.0)
        # Due now, and next due an hour later: a phase-aligned next run could come seconds
        # after the first and fire twice while the test looks.
        good = store.write(r.set_schedule, "owner", "ops", "good", 3600, first_run_at=time.time() - 10)
        store.conn.execute("UPDATE schedules SET interval_s = 5e-324 WHERE id = ?", (bad.id,))
    inst = start()
    inst.wait_for("disabled: OverflowError")
    listed = {s["name"]: s for s in json.loads(ok(home, "schedules", "--json"))}
    assert listed["bad"]["enabled"] is False and "OverflowError" in listed["bad"]["last_error"]
    assert listed["good"]["last_run_at"] is not None
    titles = [t["title"] for t in json.loads(ok(home, "tasks", "--json"))]
    assert titles == ["[good] scheduled"]
    assert "off: OverflowError" in ok(home, "schedules")
    assert inst.proc.poll() is None
    assert good.id != bad.id


@pytest.mark.timeout(120)
def test_the_wal_is_truncated_once_writes_go_quiet(db_path: Path, start: Callable[..., Running]) -> None:
    """The audit's case: readers holding snapshots starve SQLite's auto-checkpoint, the
    WAL grows past the database, and nothing shrinks it once the writes stop."""
    start()
    wal = Path(f"{db_path}-wal")
    reader = sqlite3.connect(db_path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM tasks").fetchone()  # holds its snapshot
    with Store.open(db_path, AGENTS) as store:
        for i in range(300):
            store.write(r.create_task, "owner", f"bulk {i}", body="x" * 20_000)
    reader.rollback()
    reader.close()
    big = wal.stat().st_size
    assert big > 4 << 20
    wait_until(lambda: wal.stat().st_size < 1 << 20, timeout=30)
    with Store.open(db_path, AGENTS) as store:
        assert len(store.read(queries.tasks)) == 300  # folded into the database, not lost
        assert store.conn.execute("PRAGMA journal_size_limit").fetchone()[0] == 64 << 20


def test_the_reporter_prints_hostile_text_escaped(db_path: Path, start: Callable[..., Running]) -> None:
    inst = start()
    with Store.open(db_path, AGENTS) as store:
        store.write(r.create_task, "owner", "x\x1b]0;owned\x07 \x9b2J\u202eevil")
    line = inst.wait_for("new task")
    assert "\x1b" not in line and "\x9b" not in line and "\u202e" not in line
    assert "\\x1b]0;owned\\x07 \\x9b2J\\u202eevil" in line  # shown as escapes


def test_headless_lines_read_as_words_within_the_width(db_path: Path, start: Callable[..., Running]) -> None:
    """Issue 15: the default output was raw JSON with epoch floats, wrapping, and an
    approval under --approvals cli was cut JSON with no hint. Now: one line per event,
    time, agent, what happened, the task; the commands that answer an approval."""
    inst = start("--approvals", "cli", COLUMNS="100")
    title = "rebuild the search index after the schema change " * 4
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, "owner", title, owner="dev")
        approval = store.write(r.request_approval, "dev", "run_shell", {"cmd": "make index"},
                               "make index", "rebuild", timeout_s=600, task_id=task.id)
    created = inst.wait_for(f"#{task.id} rebuild the search index")
    asked = inst.wait_for(f"agentdeck approve {approval.id} / agentdeck deny {approval.id}")
    assert created.startswith(time.strftime("%H:%M:%S", time.localtime(task.created_at)) + " owner")
    assert "new task for dev" in created and created.rstrip("\n").endswith("…")
    assert " dev " in asked and "asks to run run_shell: make index" in asked and f"#{task.id} " in asked
    for line in (created, asked):
        assert len(line.rstrip("\n")) <= 100 and "{" not in line
    assert inst.stop() == 0


# --- stopping: always, and soon ---


@pytest.mark.timeout(90)
def test_sigterm_ends_an_instance_whose_threads_are_stuck(home: Path) -> None:
    """Issue 15: a phase stuck in a blocking call (a tokenizer thread, the engine thread)
    kept the process alive for minutes after "agentdeck stopped". The shutdown steps are
    bounded and the exit watchdog ends the process; the row is released."""
    inst = Running(home, argv=[sys.executable, str(REPO / "tests" / "stuck_instance.py"),
                               "run", "--headless"])
    try:
        inst.wait_for("agentdeck running", timeout=30)
        ok(home, "send", "--to", "dev", "anything")
        inst.wait_for("STUCK", timeout=30)  # a worker thread now blocks for good
        started = time.monotonic()
        inst.proc.send_signal(signal.SIGTERM)
        assert inst.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 20
        inst.wait_for("agentdeck stopped", timeout=5)
        inst.wait_for("exiting now", timeout=5)  # the watchdog's one line
        assert json.loads(ok(home, "status", "--json"))["instance"] is None
    finally:
        if inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait()


@pytest.mark.timeout(60)
def test_sigterm_while_the_model_loads_stops_cleanly(home: Path, db_path: Path) -> None:
    """Issue 15: a SIGTERM before the model had loaded exited 143 with nothing said.
    The handlers are installed first; the stop waits for the load, then says so. The
    load is held open until the stop is requested: the signal certainly lands during it."""
    inst = Running(home, argv=[sys.executable, str(REPO / "tests" / "stuck_instance.py"),
                               "--hold-load", "run", "--headless"])
    try:
        inst.wait_for("loading model", timeout=30)  # printed once the handlers are in
        inst.wait_for("LOADING", timeout=30)  # the load has begun, and waits for the stop
        inst.proc.send_signal(signal.SIGTERM)
        assert inst.proc.wait(timeout=30) == 0
        inst.wait_for("agentdeck stopped", timeout=5)
        assert not any("agentdeck running" in line for line in inst.lines)
        assert not any("exiting now" in line for line in inst.lines)  # stopped, not cut short
        with Store.open(db_path, AGENTS) as store:
            assert store.read(queries.instance) is None
    finally:
        if inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait()


@pytest.mark.timeout(60)
def test_the_loading_bar_leaves_the_screen_once_the_model_has_loaded(home: Path) -> None:
    """Issue 15: the model-loading bar stayed on the terminal for the whole headless run.
    stderr on a pseudo-terminal (the bar is drawn only there); once the instance says it
    is running, what the terminal shows holds no bar."""
    import pty
    import select

    import pyte

    master, slave = pty.openpty()
    inst = Running(home, stderr=slave, TERM="xterm-256color", COLUMNS="100")
    os.close(slave)
    try:
        inst.wait_for("agentdeck running", timeout=30)
        drawn = b""
        while select.select([master], [], [], 0)[0]:  # all the bar wrote so far
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
        assert b"loading" in drawn  # it was drawn while the model loaded
        screen = pyte.Screen(100, 30)
        pyte.ByteStream(screen).feed(drawn.replace(b"\n", b"\r\n"))
        assert not any("loading" in row for row in screen.display), screen.display
        assert inst.stop() == 0
    finally:
        os.close(master)
        if inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait()


def test_memory_rule_and_channel_events_read_as_words_not_json(db_path: Path) -> None:
    """The headless line for what agents remember, rules and channels: words, not a
    JSON dump of the payload (the audit's first run printed memory.written as JSON)."""
    from agents.runtime.event_text import event_line

    with Store.open(db_path, AGENTS) as store:
        store.write(r.write_memory, "ops", "the disk is 41% full", kind="fact", importance=4)
        store.write(r.add_rule, "owner", "dev", "run_shell", "make test", "allow")
        store.write(r.create_channel, "owner", "deploys")
        events = store.read(queries.events_after, 0, 1000)
    lines = {e.kind: event_line(e, width=200) for e in events}
    assert "remembered (private fact, importance 4): the disk is 41% full" in lines["memory.written"]
    assert "added: allow dev run_shell: make test" in lines["rule.added"]
    assert "channel #deploys created" in lines["channel.created"]
    for line in lines.values():
        assert "{" not in line, line


@pytest.mark.timeout(90)
def test_the_exit_watchdog_ends_a_process_whose_output_pipe_stalled(home: Path, db_path: Path) -> None:
    """Issue 15: `agentdeck run 2>&1 | less`, paused. The thread writing event lines
    blocks on the full pipe; the watchdog's log line then blocked on it too (logging to
    stderr and flushing Python's streams), so the process never ended and kept its row.
    It releases the row first and gives its line one second on fd 2 now."""
    import fcntl

    def blocked_writing_a_pipe(pid: int) -> bool:  # a thread of it, as the kernel says
        return any(wchan.read_text().endswith("pipe_write")
                   for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"))

    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe: quick to fill
    proc = subprocess.Popen(agentdeck_cmd("run", "--headless", "--json"), env=subprocess_env(home),
                            stdout=write_end, stderr=write_end)
    os.close(write_end)
    reader = os.fdopen(read_end)
    try:
        for line in reader:  # read until it runs, then never again
            if "agentdeck running" in line:
                break
        with Store.open(db_path, AGENTS) as store:  # far more event lines than the pipe holds
            for _ in range(30):
                store.write(r.request_approval, "dev", "run_shell", {}, "make", "x" * 4000, timeout_s=600)
        wait_until(lambda: blocked_writing_a_pipe(proc.pid), timeout=15)
        # Top the pipe up to the last byte (a line shorter than the blocked one would
        # still fit), through a file description of our own, non-blocking.
        topper = os.open(f"/proc/self/fd/{read_end}", os.O_WRONLY | os.O_NONBLOCK)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(topper, b"-")
        os.close(topper)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        assert time.monotonic() - started < 25
        with Store.open(db_path, AGENTS) as store:
            assert store.read(queries.instance) is None  # the watchdog released the row
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.close()
