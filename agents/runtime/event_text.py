"""An event as one terminal-safe line: `event_text` (id, date, kind, the payload as JSON)
for `agentdeck log` and the cockpit's log; `phase_text` (an agent's triage, step or
reflection) for both and the cockpit's task detail; `event_line` (time, who, what happened in
words, the task) for the headless reporter, fitted to a terminal's width."""

from __future__ import annotations

import json
import time

from agents.protocol import (
    AgentReflected,
    AgentStatusChanged,
    AgentStepped,
    AgentTriaged,
    ApprovalDecided,
    ApprovalRequested,
    ChannelCreated,
    Event,
    MemberChanged,
    MemoryCompacted,
    MemoryDeleted,
    MemoryWritten,
    MessageDeleted,
    MessagePosted,
    RuleAdded,
    RuleRemoved,
    ScheduleFailed,
    ScheduleFired,
    ScheduleRemoved,
    ScheduleSet,
    ScheduleSkipped,
    TaskAssigned,
    TaskCreated,
    TaskStatusChanged,
    TaskUpdated,
    ToolFinished,
    ToolStarted,
    UsageRecorded,
    to_builtins,
)
from agents.safe_text import safe_text, shorten


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def ago(ts: float | None, now: float | None = None) -> str:
    """"5m ago": the one wording of the CLI and the cockpit."""
    if ts is None:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def event_text(event: Event) -> str:
    """One terminal-safe line: payloads carry titles, reasons and tool output."""
    payload = to_builtins(event.payload)
    assert isinstance(payload, dict)
    payload.pop("type", None)
    detail = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if len(detail) > 160:
        detail = detail[:159] + "…"
    to = f" → {event.recipient}" if event.recipient else ""
    return safe_text(
        f"{event.id:>6} {when(event.ts)} {event.kind:<18} {event.actor}{to} {event.subject} {detail}"
    )


def task_of(event: Event) -> int | None:
    """The task an event is about, if any."""
    p = event.payload
    for holder in (p, getattr(p, "approval", None), getattr(p, "call", None),
                   getattr(p, "message", None), getattr(p, "status", None), getattr(p, "usage", None)):
        task_id = getattr(holder, "task_id", None)
        if isinstance(task_id, int):
            return task_id
    return p.task.id if isinstance(p, TaskCreated) else None


def event_line(event: Event, *, title: str | None = None, width: int = 100,
               approve_hint: bool = False) -> str:
    """`HH:MM:SS agent what happened: detail · #id title`, terminal-safe, shortened to fit
    `width` where it can be (the detail first, then the title). `approve_hint`: spell out
    the commands that answer an approval (someone is expected to)."""
    what, detail, tail = _describe(event, approve_hint)
    task_id = task_of(event)
    if title is None and isinstance(event.payload, TaskCreated):
        title = event.payload.task.title
    # An agent's status is written by agentdeck (system), but it is the agent's news.
    who = event.payload.status.agent if isinstance(event.payload, AgentStatusChanged) else event.actor
    head = safe_text(f"{time.strftime('%H:%M:%S', time.localtime(event.ts))} {who:<6} {what}")
    detail, title = _flat(detail), _flat(title or "")
    ref = "" if task_id is None else f"#{task_id}"

    def compose() -> str:
        ref_text = f"{ref} {title}".rstrip()
        return (head + (f": {detail}" if detail else "") + (f" · {ref_text}" if ref_text else "")
                + (f" · {tail}" if tail else ""))

    line = compose()
    # What an approval would run matters more than the task's title; elsewhere the
    # detail is the extra, and goes first.
    order = ((("title", 16), ("detail", 24), ("title", 0), ("detail", 8))
             if isinstance(event.payload, ApprovalRequested)
             else (("detail", 24), ("title", 16), ("detail", 8), ("title", 0)))
    for shrink, floor in order:
        over = len(line) - width
        if over <= 0:
            break
        if shrink == "detail" and len(detail) > floor:
            detail = shorten(detail, max(floor, len(detail) - over))
        elif shrink == "title" and len(title) > floor:
            title = shorten(title, max(floor, len(title) - over))
        line = compose()
    return line


def phase_text(p: AgentTriaged | AgentStepped | AgentReflected) -> tuple[str, str]:
    """An agent's phase on a task as (what it decided or did, the words that go with it):
    the one description of a step, for the log and the cockpit's task detail."""
    if isinstance(p, AgentTriaged):
        to = f" to {p.delegate_to}" if p.delegate_to else ""
        by = " (by rule)" if p.by == "rule" else ""
        return f"triage: {p.action}{to}{by}", p.reason
    if isinstance(p, AgentStepped):
        decision = f" ({p.decision})" if p.decision else ""
        return f"step {p.step}: {p.tool or 'answer'}{decision} {p.status}", p.summary
    return f"reflected: {p.outcome}, importance {p.importance}", p.lesson


def _flat(text: str) -> str:
    """One line, whitespace collapsed, terminal-safe; capped early (tool output can be
    megabytes, and only a line's worth is ever shown)."""
    return safe_text(" ".join(text[:2000].split()))


def _describe(event: Event, approve_hint: bool) -> tuple[str, str, str]:
    """(what happened, a detail that may be shortened, a tail that may not)."""
    p = event.payload
    if isinstance(p, TaskCreated):
        return (f"new task for {p.task.owner}" if p.task.owner else "new task (for the router)"), "", ""
    if isinstance(p, TaskAssigned):
        return f"assigned it to {p.owner or 'nobody'}", "", ""
    if isinstance(p, TaskStatusChanged):
        return f"task {p.old} → {p.new}", (p.result or "") if p.new != "active" else "", ""
    if isinstance(p, MessagePosted):
        m = p.message
        to = f"message to {m.recipient}" if m.recipient else f"message in channel {m.channel_id}"
        return to, m.body, ""
    if isinstance(p, ApprovalRequested):
        a = p.approval
        hint = (f"agentdeck approve {a.id} / agentdeck deny {a.id}" if approve_hint
                else f"approval {a.id}")
        return f"asks to run {a.tool}", a.resolved, hint
    if isinstance(p, ApprovalDecided):
        by = f" by {p.decided_by}" if p.decided_by else ""
        return f"approval {p.approval_id} {p.status}{by}", "", ""
    if isinstance(p, ToolStarted):
        args = json.dumps(p.call.arguments, ensure_ascii=False, sort_keys=True)
        return f"runs {p.call.tool}", args, ""
    if isinstance(p, ToolFinished):
        return f"tool call {p.call_id} {p.status}", p.result or "", ""
    if isinstance(p, AgentStatusChanged):
        return f"is {p.status.state}", p.status.detail, ""
    if isinstance(p, AgentTriaged | AgentStepped | AgentReflected):
        return (*phase_text(p), "")
    if isinstance(p, ScheduleSet):
        s = p.schedule
        how = f"on {s.cron}" if s.cron else f"every {s.interval_s:g} s"
        return f"schedule {s.id} ({s.agent} {s.name}) set, {how}", "", ""
    if isinstance(p, ScheduleFired):
        return f"schedule {p.schedule_id} fired", "", ""
    if isinstance(p, ScheduleSkipped):
        return f"schedule {p.schedule_id} skipped: task {p.pending_task_id} not finished", "", ""
    if isinstance(p, ScheduleFailed):
        return f"schedule {p.schedule_id} disabled", p.error, ""
    if isinstance(p, MemoryWritten):
        m = p.memory
        return f"remembered ({m.scope} {m.kind}, importance {m.importance})", m.content, ""
    if isinstance(p, MemoryCompacted):
        return f"compacted {len(p.compacted)} memories into memory {p.summary_id}", "", ""
    if isinstance(p, RuleAdded):
        rule = p.rule
        return f"rule {rule.id} added: {rule.decision} {rule.agent} {rule.tool}", rule.pattern, ""
    if isinstance(p, RuleRemoved):
        return f"rule {p.rule_id} removed", "", ""
    if isinstance(p, ChannelCreated):
        return f"channel #{p.channel.name} created", "", ""
    if isinstance(p, MemberChanged):
        return (f"{p.member} left channel {p.channel_id}" if p.role is None
                else f"{p.member} joined channel {p.channel_id} as {p.role}"), "", ""
    if isinstance(p, MessageDeleted):
        return f"message {p.message_id} deleted", "", ""
    if isinstance(p, MemoryDeleted):
        return f"memory {p.memory_id} deleted", "", ""
    if isinstance(p, TaskUpdated):
        changes = [f"priority {p.priority}" if p.priority is not None else "",
                   f"deadline {when(p.deadline)}" if p.deadline is not None else ""]
        return "task changed", ", ".join(c for c in changes if c), ""
    if isinstance(p, ScheduleRemoved):
        return f"schedule {p.schedule_id} ({p.agent} {p.name}) removed", "", ""
    if isinstance(p, UsageRecorded):
        u = p.usage
        return (f"used {u.prompt_tokens} prompt + {u.completion_tokens} tokens "
                f"in {u.decode_s:.1f} s"), "", ""
    # Anything else: its kind and its fields, as compact JSON.
    fields = to_builtins(p)
    assert isinstance(fields, dict)
    fields.pop("type", None)
    return event.kind, json.dumps(fields, ensure_ascii=False, separators=(",", ":")), ""
