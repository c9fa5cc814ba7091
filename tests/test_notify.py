"""Notifications: each delivery recorded against a real loopback HTTP server whose
behaviour the test scripts (down, slow, 500 then 200, up), the ntfy and JSON formats,
quiet hours (an approval's webhook still goes), a keyring header that reaches the
server but never the database or the log, the desktop channel, the cockpit's terminal
alert, `agentdeck approvals`' line, and a host whose agent asks for approval."""

from __future__ import annotations

import asyncio
import datetime
import email.header
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import AGENTS, ok, reflect, until
from scripted_backend import ScriptedBackend, queued

from agents.bus import Bus
from agents.config import Config, parse_config
from agents.inference.meter import BackendMeter, MeterSnapshot
from agents.notify import desktop
from agents.notify.alerts import TerminalAlerts
from agents.notify.notifier import Notifier
from agents.notify.summary import notified_line
from agents.notify.text import Note, in_quiet_hours, terminal_alert
from agents.notify.webhook import request_for
from agents.protocol import OWNER, SYSTEM, Approval
from agents.runtime import Host
from agents.store import AsyncStore, Store, queries
from agents.store import reducers as r
from agents.store.queries_notifications import Notification, notifications, notifications_by_approval
from agents.store.reducers.notifications import FINAL, record_notification, update_notification

pytestmark = pytest.mark.timeout(60)

SECRET = "tok-9f2c-very-secret"
QUIET_NOW = datetime.datetime(2025, 1, 1, 23, 30)  # inside quiet hours 22:00-07:00
DAY_NOW = datetime.datetime(2025, 1, 1, 12, 0)


class Hook:
    """A webhook receiver on loopback. `script`: what each request gets in turn (the
    last repeats): an HTTP status, or "slow" (no answer until the test ends)."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                action = hook.script.pop(0) if len(hook.script) > 1 else hook.script[0]
                if action == "slow":
                    hook.release.wait(30)
                    action = 200
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/agentdeck"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    made: list[Hook] = []
    yield made
    for hook in made:
        hook.close()


def serve(hooks: list[Hook], *script: int | str) -> Hook:
    hook = Hook(list(script))
    hooks.append(hook)
    return hook


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/agentdeck"  # nothing listens there now


def notify_config(ws: Path, url: str, *, extra: str = "", desktop_on: bool = False) -> Config:
    return parse_config(f'workspace = "{ws}"\nsandbox = "off"\n[notify]\nurl = "{url}"\n'
                        f"desktop = {'true' if desktop_on else 'false'}\n{extra}\n")


@pytest.fixture
async def bus(astore: AsyncStore) -> AsyncIterator[Bus]:
    b = await Bus(astore).start()
    try:
        yield b
    finally:
        await b.close()


async def approval(astore: AsyncStore, reason: str = "a file to write") -> Approval:
    return await astore.write(r.request_approval, "dev", "write_file", {"path": "notes.txt"},
                              "/ws/notes.txt", reason, timeout_s=600)


async def started(config: Config, home: Path, astore: AsyncStore, bus: Bus, **kw: object) -> Notifier:
    notifier = Notifier(config, home, astore, backoff_s=kw.pop("backoff_s", 0.01), **kw)  # type: ignore[arg-type]
    await notifier.start(bus, start=await astore.read(queries.last_event_id))
    return notifier


async def row(astore: AsyncStore, row_id: int) -> Notification:
    found = await astore.read(lambda c: [n for n in notifications(c) if n.id == row_id])
    return found[0]


async def final(astore: AsyncStore, row_id: int, within: float = 20.0) -> Notification:
    async def done() -> bool:
        return (await row(astore, row_id)).status in FINAL

    await until(done, within)
    return await row(astore, row_id)


async def deliver_once(config: Config, a: Approval, home: Path, astore: AsyncStore, bus: Bus) -> Notification:
    """A notifier started for one approval's note, stopped once its one delivery ended: that delivery."""
    notifier = await started(config, home, astore, bus)
    try:
        [row_id] = await notifier.notify(note_for(a))
        return await final(astore, row_id)
    finally:
        await notifier.stop()


def note_for(a: Approval, event: str = "approval.requested") -> Note:
    return Note(event=event, subject=f"approval:{a.id}", approval_id=a.id, ts=1.0,  # type: ignore[arg-type]
                title=f"agentdeck: dev waits for approval {a.id}", text=f"approval {a.id}: dev asks")


# --- the delivery table --------------------------------------------------------------------

CASES = {
    # injected: (server script, retries, timeout) -> recorded (status, attempts, http_status, CLI line)
    "up": ([200], 4, 5.0, ("sent", 1, 200, "notified: webhook sent (HTTP 200, 1 attempt)")),
    "500 then 200": ([500, 200], 4, 5.0, ("sent", 2, 200, "notified: webhook sent (HTTP 200, 2 attempts)")),
    "500 always": ([500], 4, 5.0, ("failed", 5, 500, "not notified: webhook failed (HTTP 500 ×5)")),
    "404": ([404], 4, 5.0, ("failed", 1, 404, "not notified: webhook failed (HTTP 404 ×1)")),
    "slow": (["slow"], 1, 0.3, ("failed", 2, None, "not notified: webhook failed (timed out after 0.3 s ×2)")),
    "down": ([], 3, 5.0, ("failed", 4, None, "not notified: webhook failed (connection refused ×4)")),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_webhook_delivery_is_recorded(case: str, hooks: list[Hook], home: Path, ws: Path,
                                                 astore: AsyncStore, bus: Bus) -> None:
    script, retries, timeout, (status, attempts, http_status, line) = CASES[case]
    url = serve(hooks, *script).url if script else closed_port_url()
    config = notify_config(ws, url, extra=f"retries = {retries}\ntimeout_s = {timeout}")
    a = await approval(astore)  # before the start: told by notify() below, not by the bus
    got = await deliver_once(config, a, home, astore, bus)
    assert (got.channel, got.status, got.attempts, got.http_status) == ("webhook", status, attempts, http_status)
    assert len(got.detail.split(", ")) == attempts  # each attempt's outcome, in order
    if script:
        assert len(hooks[0].received) == attempts
    told = await astore.read(notifications_by_approval, [a.id])
    assert notified_line(told[a.id]) == line


async def test_ntfy_sends_the_text_as_the_body_and_the_title_as_a_header(hooks: list[Hook], home: Path, ws: Path,
                                                                        astore: AsyncStore, bus: Bus) -> None:
    hook = serve(hooks, 200)
    notifier = await started(notify_config(ws, hook.url), home, astore, bus)
    try:
        a = await approval(astore, reason="tidy the notes \x1b]0;owned\x07 now")
        await until(lambda: _async(len(hook.received) == 1))
    finally:
        await notifier.stop()
    headers, body = hook.received[0]
    text = body.decode()
    assert headers["title"] == f"agentdeck: dev waits for approval {a.id}"
    assert headers["content-type"].startswith("text/plain")
    assert text.startswith(f"approval {a.id}: dev asks to run write_file /ws/notes.txt (tidy the notes ")
    assert f"agentdeck approve {a.id}" in text and len(text) <= 200
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;owned\\x07" in text  # shown, not obeyed


async def test_json_format_and_a_non_ascii_title(hooks: list[Hook], home: Path, ws: Path, astore: AsyncStore,
                                                 bus: Bus) -> None:
    hook = serve(hooks, 200)
    notifier = await started(notify_config(ws, hook.url, extra='format = "json"'), home, astore, bus)
    try:
        note = Note(event="task.failed", subject="task:7", ts=12.5, title="agentdeck: tâche 7 échouée",
                    text="task 7 failed: disk full")
        await notifier.notify(note)
        await until(lambda: _async(len(hook.received) == 1))
    finally:
        await notifier.stop()
    headers, body = hook.received[0]
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"event": "task.failed", "title": "agentdeck: tâche 7 échouée",
                                "text": "task 7 failed: disk full", "subject": "task:7", "ts": 12.5}
    # The ntfy format's Title header, for the same title: RFC 2047, as ntfy reads it.
    sent, _ = request_for(notify_config(ws, hook.url).notify, note, {})
    decoded = email.header.decode_header(sent["Title"])
    assert b"".join(p if isinstance(p, bytes) else p.encode() for p, _ in decoded).decode() == note.title


# --- quiet hours ---------------------------------------------------------------------------


def test_quiet_hours_wrap_midnight_and_end_on_time(ws: Path) -> None:
    night = notify_config(ws, "http://127.0.0.1:9/x", extra='quiet_start = "22:00"\nquiet_end = "07:00"').notify
    assert in_quiet_hours(night, QUIET_NOW) and in_quiet_hours(night, datetime.datetime(2025, 1, 2, 6, 59))
    assert not in_quiet_hours(night, datetime.datetime(2025, 1, 2, 7, 0)) and not in_quiet_hours(night, DAY_NOW)
    lunch = notify_config(ws, "http://127.0.0.1:9/x", extra='quiet_start = "12:00"\nquiet_end = "13:00"').notify
    assert in_quiet_hours(lunch, DAY_NOW) and not in_quiet_hours(lunch, QUIET_NOW)
    assert not in_quiet_hours(notify_config(ws, "http://127.0.0.1:9/x").notify, QUIET_NOW)


async def test_in_quiet_hours_only_an_approvals_webhook_goes(hooks: list[Hook], home: Path, ws: Path,
                                                            astore: AsyncStore, bus: Bus) -> None:
    hook = serve(hooks, 200)
    config = notify_config(ws, hook.url, extra='quiet_start = "22:00"\nquiet_end = "07:00"', desktop_on=True)
    a = await approval(astore)
    notifier = await started(config, home, astore, bus, local_time=lambda: QUIET_NOW,
                             env={"DISPLAY": ":0", "PATH": os.environ["PATH"]})
    try:
        approval_rows = await notifier.notify(note_for(a))
        task_rows = await notifier.notify(Note(event="task.failed", subject="task:3", ts=1.0,
                                               title="agentdeck: task 3 failed", text="task 3 failed: x"))
        sent = await final(astore, approval_rows[0])
    finally:
        await notifier.stop()
    got = [await row(astore, i) for i in (*approval_rows, *task_rows)]
    assert [(n.event, n.channel, n.status, n.detail) for n in got] == [
        ("approval.requested", "webhook", "sent", "HTTP 200"),
        ("approval.requested", "desktop", "skipped", "quiet hours"),
        ("task.failed", "webhook", "skipped", "quiet hours"),
        ("task.failed", "desktop", "skipped", "quiet hours"),
    ]
    assert sent.status == "sent" and len(hook.received) == 1  # the approval's only


# --- secrets -------------------------------------------------------------------------------


async def test_a_keyring_header_reaches_the_server_never_the_database_or_the_log(
        hooks: list[Hook], home: Path, ws: Path, db_path: Path, astore: AsyncStore, bus: Bus,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AGENTDECK_SECRET_NTFY_TOKEN", SECRET)
    hook = serve(hooks, 500, 200)
    config = notify_config(ws, hook.url, extra='[notify.headers]\nAuthorization = "keyring:NTFY_TOKEN"')
    caplog.set_level(logging.DEBUG)
    notifier = await started(config, home, astore, bus)
    try:
        a = await approval(astore, reason=f"it needs {SECRET} to log in")  # a model that leaks it
        await until(lambda: _async(len(hook.received) == 2))
        [told] = (await astore.read(notifications_by_approval, [a.id]))[a.id]
        await final(astore, told.id)
    finally:
        await notifier.stop()
    assert all(headers["authorization"] == SECRET for headers, _ in hook.received)
    assert all(SECRET not in body.decode() and "[secret:NTFY_TOKEN]" in body.decode() for _, body in hook.received)
    rows = await astore.read(lambda c: [tuple(x) for x in c.execute("SELECT * FROM notifications")])
    events = await astore.read(lambda c: [tuple(x) for x in c.execute("SELECT * FROM events")])
    assert rows and SECRET not in repr(rows) and "NTFY_TOKEN" not in repr(events)
    assert SECRET not in caplog.text


async def test_a_header_secret_not_set_fails_naming_it(hooks: list[Hook], home: Path, ws: Path,
                                                      astore: AsyncStore, bus: Bus,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTDECK_SECRET_NOT_SET_YET", raising=False)
    monkeypatch.setattr("agents.secrets.keyring_usable", lambda: False)
    hook = serve(hooks, 200)
    config = notify_config(ws, hook.url, extra='[notify.headers]\nAuthorization = "keyring:NOT_SET_YET"')
    a = await approval(astore)
    got = await deliver_once(config, a, home, astore, bus)
    assert got.status == "failed" and "NOT_SET_YET is not set" in got.detail and not hook.received


# --- desktop -------------------------------------------------------------------------------


async def test_the_desktop_channel_needs_a_session(hooks: list[Hook], home: Path, ws: Path, tmp_path: Path,
                                                   astore: AsyncStore, bus: Bus,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desktop, "desktop_notifier_available", lambda: False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shown = tmp_path / "shown.txt"
    fake = bin_dir / "notify-send"  # a real program on PATH, recording what it was asked to show
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{shown}"\n')
    fake.chmod(0o755)
    config = parse_config(f'workspace = "{ws}"\n[notify]\ndesktop = true\n')
    a = await approval(astore)
    headless = await started(config, home, astore, bus, env={"PATH": str(bin_dir)})
    try:
        [skipped] = await headless.notify(note_for(a))
    finally:
        await headless.stop()
    on_desktop = await started(config, home, astore, bus, env={"DISPLAY": ":0", "PATH": str(bin_dir)})
    try:
        [sent] = await on_desktop.notify(note_for(a))
        got = await final(astore, sent)
    finally:
        await on_desktop.stop()
    first = await row(astore, skipped)
    assert (first.status, first.detail) == ("skipped", "no desktop session "
                                            "(no DBUS_SESSION_BUS_ADDRESS, DISPLAY or WAYLAND_DISPLAY)")
    assert (got.channel, got.status, got.detail) == ("desktop", "sent", "notify-send")
    assert shown.read_text().splitlines()[-2:] == [f"agentdeck: dev waits for approval {a.id}",
                                                   f"approval {a.id}: dev asks"]


# --- events, breakers, stopping ------------------------------------------------------------


async def test_a_failed_task_and_an_opening_breaker_are_told_once(hooks: list[Hook], home: Path, ws: Path,
                                                                 astore: AsyncStore, bus: Bus) -> None:
    hook = serve(hooks, 200)
    config = notify_config(ws, hook.url, extra='format = "json"')
    state = {"now": "ready"}
    polls = [0]

    def meter() -> MeterSnapshot:
        polls[0] += 1
        return MeterSnapshot(ts=0.0, state="ready", device="CPU", model="m", slots=[], waiting={}, kv_used=0,
                             kv_total=0, tokens_per_s=0.0, gpu=None, backends=[
                                 BackendMeter(name="gpu", kind="llama-server", state=state["now"],  # type: ignore[arg-type]
                                              detail="circuit breaker open: refused"),
                                 BackendMeter(name="cpu", kind="embedded", state="ready")])

    notifier = Notifier(config, home, astore, backoff_s=0.01, breaker_poll_s=0.02)
    await notifier.start(bus, start=await astore.read(queries.last_event_id), meter=meter)
    try:
        task = await astore.write(r.create_task, OWNER, "report disk usage", owner="ops")
        await astore.write(r.set_task_status, "ops", task.id, "active")
        await astore.write(r.set_task_status, "ops", task.id, "failed", result="df: not found")
        state["now"] = "breaker_open"
        await until(lambda: _async(len(hook.received) == 2))
        seen = polls[0]
        await until(lambda: _async(polls[0] >= seen + 5))  # five more polls, the breaker still open
    finally:
        await notifier.stop()
    bodies = sorted((json.loads(body) for _, body in hook.received), key=lambda b: b["event"])
    assert [(b["event"], b["subject"]) for b in bodies] == [("breaker.open", "backend:gpu"),
                                                            ("task.failed", f"task:{task.id}")]
    assert bodies[0]["text"] == "backend gpu: circuit breaker open: refused"
    assert bodies[1]["text"] == f"task {task.id} 'report disk usage' failed: df: not found"
    assert len(hook.received) == 2


async def test_a_stop_during_a_retry_ends_at_once(hooks: list[Hook], home: Path, ws: Path, astore: AsyncStore,
                                                  bus: Bus) -> None:
    hook = serve(hooks, 500)
    a = await approval(astore)
    notifier = await started(notify_config(ws, hook.url), home, astore, bus, backoff_s=60.0)
    [row_id] = await notifier.notify(note_for(a))

    async def retrying() -> bool:
        return (await row(astore, row_id)).status == "retrying"

    await until(retrying)
    began = time.monotonic()
    await asyncio.wait_for(notifier.stop(), 5)
    assert time.monotonic() - began < 2.0  # not the 60 s backoff
    got = await row(astore, row_id)
    assert (got.status, got.attempts, got.http_status) == ("failed", 1, 500)
    assert got.detail == "HTTP 500, agentdeck stopped before delivery"
    assert notified_line([got]) == "not notified: webhook failed (agentdeck stopped before delivery, 1 attempt)"


async def test_nothing_configured_records_nothing(home: Path, ws: Path, astore: AsyncStore, bus: Bus) -> None:
    config = parse_config(f'workspace = "{ws}"\n[notify]\ndesktop = false\n')
    notifier = await started(config, home, astore, bus)
    a = await approval(astore)
    assert await notifier.notify(note_for(a)) == []
    await notifier.stop()
    assert notified_line((await astore.read(notifications_by_approval, [a.id]))[a.id]) == \
        "not notified (no channel configured)"


# --- the cockpit's terminal alert ------------------------------------------------------------


async def test_terminal_alerts_ring_once_and_stay_terminal_safe(ws: Path, astore: AsyncStore) -> None:
    alerts = TerminalAlerts(parse_config(f'workspace = "{ws}"\n').notify)
    a = await approval(astore, reason="x\x1b]777;notify;fake;owned\x07\x1b[2J")
    [note] = alerts.approvals([a])
    assert alerts.approvals([a]) == []  # once
    sequence = terminal_alert(note, bell=True, osc=True)
    assert sequence.startswith("\a\x1b]9;") and sequence.count("\x1b") == 2 and sequence.count("\x07") == 3
    assert "fake" in sequence and ";fake;" not in sequence  # the text cannot add OSC 777 fields
    old = await astore.write(r.create_task, OWNER, "old", owner="ops")
    await astore.write(r.set_task_status, "ops", old.id, "active")
    await astore.write(r.set_task_status, "ops", old.id, "failed", result="before the cockpit")
    new = await astore.write(r.create_task, OWNER, "new", owner="ops")
    assert alerts.tasks(await astore.read(queries.tasks)) == []  # failed before: not news
    await astore.write(r.set_task_status, "ops", new.id, "active")
    await astore.write(r.set_task_status, "ops", new.id, "failed", result="boom")
    [failed] = alerts.tasks(await astore.read(queries.tasks))
    assert failed.subject == f"task:{new.id}" and alerts.tasks(await astore.read(queries.tasks)) == []


# --- agentdeck approvals -----------------------------------------------------------------------


def test_agentdeck_approvals_says_whether_the_person_was_notified(home: Path, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        ids = [store.write(r.request_approval, "dev", "write_file", {"path": f"{i}.txt"}, f"/ws/{i}.txt", "",
                           timeout_s=600).id for i in range(3)]
        sent = store.write(record_notification, SYSTEM, "approval.requested", f"approval:{ids[0]}", "webhook",
                           approval_id=ids[0])
        store.write(update_notification, SYSTEM, sent, status="retrying", attempts=1, http_status=500,
                    detail="HTTP 500")
        store.write(update_notification, SYSTEM, sent, status="sent", attempts=2, http_status=200,
                    detail="HTTP 500, HTTP 200")
        failed = store.write(record_notification, SYSTEM, "approval.requested", f"approval:{ids[1]}", "webhook",
                             approval_id=ids[1])
        store.write(update_notification, SYSTEM, failed, status="failed", attempts=5, http_status=500,
                    detail=", ".join(["HTTP 500"] * 5))
    listed = ok(home, "approvals").splitlines()

    def told(approval_id: int) -> str:
        at = listed.index(next(line for line in listed if line.startswith(f"approval {approval_id}: ")))
        return next(line for line in listed[at:] if "notified" in line)

    assert told(ids[0]) == "  notified: webhook sent (HTTP 200, 2 attempts)"
    assert told(ids[1]) == "  not notified: webhook failed (HTTP 500 ×5)"
    assert told(ids[2]) == "  not notified (no channel configured)"


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_an_agent_asking_for_approval_reaches_the_webhook(hooks: list[Hook], db_path: Path, home: Path,
                                                                ws: Path) -> None:
    hook = serve(hooks, 200)
    config = notify_config(ws, hook.url)
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "a file to write"}',
                       '{"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}',
                       '{"final": "notes.txt written"}', reflect("notes go in notes.txt")]}
    backend = ScriptedBackend(queued(outputs))
    async with Host(db_path, config, backend=backend, approvals="cli", crew=True) as host:  # type: ignore[arg-type]
        notifier = getattr(host, "notifier", None)  # the host's own, once it starts one
        if notifier is None:
            assert host.bus is not None
            notifier = Notifier(config, home, host.store, backoff_s=0.01)
            await notifier.start(host.bus, start=host.first_event_id, meter=host.backend.snapshot)
        try:
            await until(lambda: _async(len(hook.received) >= 1), 60)
            [pending] = await host.store.read(queries.approvals)
            [told] = (await host.store.read(notifications_by_approval, [pending.id]))[pending.id]
            await final(host.store, told.id)
            await host.store.write(r.decide_approval, OWNER, pending.id, False)
        finally:
            if getattr(host, "notifier", None) is None:
                await notifier.stop()
    headers, body = hook.received[0]
    assert pending.task_id == task.id
    assert headers["title"] == f"agentdeck: dev waits for approval {pending.id}"
    assert body.decode().startswith(f"approval {pending.id}: dev asks to run write_file {ws / 'notes.txt'}")
    assert notified_line([await _row_in(db_path, told.id)]) == "notified: webhook sent (HTTP 200, 1 attempt)"


async def _row_in(db_path: Path, row_id: int) -> Notification:
    with Store.open(db_path, AGENTS) as store:
        return next(n for n in store.read(notifications) if n.id == row_id)


async def _async(value: bool) -> bool:
    return value
