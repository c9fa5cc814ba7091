"""What a notification says, and when it must stay quiet: pure functions.

Every title and text is one line, capped, terminal-safe and redacted (secret values become
`[secret:NAME]`): it leaves agentdeck for a phone, a desktop or a terminal title bar."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import msgspec

from agents.config.schema import NotifyConfig, NotifyEvent
from agents.inference.meter import MeterSnapshot
from agents.protocol import Approval, Task
from agents.safe_text import safe_text, shorten

MAX_TITLE = 80
MAX_TEXT = 200


class Note(msgspec.Struct, frozen=True, kw_only=True):
    """One thing to tell the person, on every configured channel."""

    event: NotifyEvent
    subject: str  # 'approval:3', 'task:12', 'backend:gpu'
    title: str
    text: str
    ts: float
    approval_id: int | None = None


def clean(text: str, width: int, redact: Callable[[str], str]) -> str:
    """One line of at most `width` characters, no secret values, no control codes."""
    return shorten(safe_text(redact(" ".join(text.split()))), width)


def approval_note(approval: Approval, ts: float, redact: Callable[[str], str]) -> Note:
    what = f"{approval.tool} {approval.resolved}".strip()
    text = f"approval {approval.id}: {approval.agent} asks to run {what}"
    if approval.reason:
        text += f" ({approval.reason})"
    return Note(event="approval.requested", subject=f"approval:{approval.id}", approval_id=approval.id, ts=ts,
                title=clean(f"agentdeck: {approval.agent} waits for approval {approval.id}", MAX_TITLE,
                            redact),
                text=clean(f"{text} - agentdeck approve {approval.id} / deny {approval.id}", MAX_TEXT,
                           redact))


def task_failed_note(task_id: int, task: Task | None, result: str | None, ts: float,
                     redact: Callable[[str], str]) -> Note:
    who = f" ({task.owner})" if task is not None and task.owner else ""
    title = task.title if task is not None else ""
    why = result or (task.result if task is not None else None) or "no reason given"
    return Note(event="task.failed", subject=f"task:{task_id}", ts=ts,
                title=clean(f"agentdeck: task {task_id} failed{who}", MAX_TITLE, redact),
                text=clean(f"task {task_id} {title!r} failed: {why}" if title else
                           f"task {task_id} failed: {why}", MAX_TEXT, redact))


def breaker_note(backend: str, detail: str, ts: float, redact: Callable[[str], str]) -> Note:
    return Note(event="breaker.open", subject=f"backend:{backend}", ts=ts,
                title=clean(f"agentdeck: backend {backend} is failing", MAX_TITLE, redact),
                text=clean(f"backend {backend}: {detail or 'circuit breaker open'}", MAX_TEXT, redact))


def open_breakers(snap: MeterSnapshot) -> dict[str, str]:
    """The backends whose breaker is open now, with why: each backend's own line where
    the meter has several, else the one backend (named by its kind)."""
    states = {b.name: (b.state, b.detail) for b in snap.backends} or {snap.kind: (snap.state, snap.detail)}
    return {name: detail for name, (state, detail) in states.items() if state == "breaker_open"}


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def in_quiet_hours(config: NotifyConfig, when: datetime.datetime) -> bool:
    """Is local time `when` inside quiet_start..quiet_end (a start after the end wraps
    midnight; equal start and end: all day)?"""
    if not config.quiet_start or not config.quiet_end:
        return False
    start, end, now = _minutes(config.quiet_start), _minutes(config.quiet_end), when.hour * 60 + when.minute
    if start < end:
        return start <= now < end
    return now >= start or now < end


def terminal_alert(note: Note, *, bell: bool, osc: bool) -> str:
    """What the cockpit writes to its terminal: the bell, and a desktop notification
    through the terminal (OSC 9 for iTerm2, WezTerm, kitty, Windows Terminal; OSC 777 for
    VTE, foot, Ghostty, urxvt; a terminal that knows neither ignores both). The text is
    safe_text already, so it holds no ESC or BEL to end the sequence early; `;` would
    split OSC 777's fields."""
    out = "\a" if bell else ""
    if osc:
        title, text = note.title.replace(";", ","), note.text.replace(";", ",")
        out += f"\x1b]9;{text}\x07\x1b]777;notify;{title};{text}\x07"
    return out
