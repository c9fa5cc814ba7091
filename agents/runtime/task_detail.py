"""A task as a person reads it in the cockpit's detail view: the task with its body and
result capped, and its steps and tool calls as lines (drawn only when asked for). Read
in one call on the store's thread."""

from __future__ import annotations

import json
import sqlite3

from agents.protocol import AgentReflected, AgentStepped, AgentTriaged, Event, to_builtins
from agents.runtime.event_text import phase_text
from agents.runtime.ledger import task_tokens, tokens_line
from agents.safe_text import safe_text, shorten
from agents.store import queries


def _short(text: str, width: int) -> str:
    return shorten(safe_text(text), width)


DETAIL_CHARS = 4000  # of a task's body, and of its result: a 1 MB result took seconds to draw
DETAIL_STEPS = 200  # step events and tool calls listed, the latest


def capped(text: str, limit: int = DETAIL_CHARS) -> str:
    """The first `limit` characters, and how many more there are and where to read them."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… {len(text) - limit} more characters (agentdeck tasks --json)"


def step_line(event: Event) -> str:
    """One phase event as a person reads it: what was decided or called, and how it went."""
    p = event.payload
    if isinstance(p, AgentTriaged | AgentStepped | AgentReflected):
        what, detail = phase_text(p)
        return f"{safe_text(what)}: {_short(detail, 100)}" if detail else safe_text(what)
    kind = event.kind.removeprefix("agent.")
    return f"{kind}: {_short(json.dumps(to_builtins(p), ensure_ascii=False), 100)}"


def task_detail(conn: sqlite3.Connection, task_id: int) -> tuple[str, list[str]]:
    """The task (body and result capped) and, drawn only when asked for, its steps and tool calls."""
    task = queries.task(conn, task_id)
    if task is None:
        return f"task {task_id} is gone", []
    tokens = tokens_line(task_tokens(conn, task_id))  # its subtasks' included
    text = "\n".join([f"#{task.id} {task.title}",
                      f"status {task.status} · owner {task.owner or '-'} · by {task.created_by}"
                      f" · priority {task.priority}", *([tokens] if tokens else []),
                      "", capped(task.body or "(no body)"), "", f"result: {capped(task.result or '-')}"])
    steps = []
    for e in queries.recent_events(conn, DETAIL_STEPS, [f"task:{task_id}"]):
        if e.kind.startswith("agent."):
            steps.append(step_line(e))
    calls = queries.task_tool_calls(conn, task_id, DETAIL_STEPS)
    if calls:
        steps += ["", "tool calls:"]
        steps += [f"  #{c.id} {c.tool} {_short(json.dumps(c.arguments, ensure_ascii=False), 100)}"
                  f" → {c.status}" for c in calls]
    return text, steps
