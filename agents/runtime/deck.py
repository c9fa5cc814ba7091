"""What a front end shows of the running crew, read at the front end's own pace.

Embedded (the TUI runs the host in its own process), each agent's state, streaming text
and last tool come from its live view and the meter from the engine itself; attached
(the TUI on the home of an instance running headless), they come from the store: the
agent_status rows and the meter the instance publishes with its heartbeat. Either way a
front end calls `read_deck` on a timer; nothing is pushed at it.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

import msgspec

from agents.crew.live import LiveView
from agents.health import StatusReport, status_report
from agents.inference.meter import MeterSnapshot
from agents.store import AsyncStore


class AgentView(msgspec.Struct, kw_only=True):
    name: str
    state: str  # idle, triage, acting, reflecting, waiting, crashed, stopped, offline
    health: str  # green, amber, red
    task_id: int | None
    task_title: str
    phase: str  # triage, step 2, reflect … ("" when not in a model call)
    text: str  # the model's output streaming now (its tail); "" when attached
    call: str  # identifies the model call the text belongs to: a new one starts a new stream
    fed: int  # characters of that call so far: text is their tail
    last_tool: str | None
    last_tool_outcome: str  # "" while it runs
    tokens_per_s: float
    detail: str


class DeckView(msgspec.Struct, kw_only=True):
    agents: list[AgentView]
    meter: MeterSnapshot | None
    pending_approvals: int
    tasks: dict[str, int]
    instance_running: bool


class Metered(Protocol):
    def snapshot(self) -> MeterSnapshot: ...


def _rows(conn: sqlite3.Connection, names: list[str]) -> tuple[StatusReport, dict[int, str]]:
    report = status_report(conn, names)
    ids = [a.task_id for a in report.agents if a.task_id is not None]
    titles: dict[int, str] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        titles = dict(conn.execute(f"SELECT id, title FROM tasks WHERE id IN ({marks})", ids).fetchall())
    return report, titles


def _meter(report: StatusReport, backend: Metered | None) -> MeterSnapshot | None:
    if backend is not None:
        return backend.snapshot()
    if report.slots is None:
        return None
    try:
        return msgspec.convert(report.slots, MeterSnapshot)
    except msgspec.ValidationError:  # a meter from another version: show none rather than fail
        return None


async def read_deck(store: AsyncStore, names: list[str], *, live: dict[str, LiveView] | None = None,
                    backend: Metered | None = None) -> DeckView:
    report, titles = await store.read(_rows, names)
    views = []
    for agent in report.agents:
        view: dict[str, Any] = {"name": agent.name, "state": agent.state, "health": agent.health,
                                "task_id": agent.task_id, "task_title": titles.get(agent.task_id or 0, ""),
                                "phase": "", "text": "", "call": "", "fed": 0, "last_tool": None,
                                "last_tool_outcome": "", "tokens_per_s": 0.0, "detail": agent.detail}
        lv = (live or {}).get(agent.name)
        if lv is not None:
            task_id = lv.task_id if lv.task_id is not None else agent.task_id
            view |= {"phase": lv.phase, "text": lv.text, "fed": lv.fed,
                     "call": f"{lv.task_id}:{lv.phase}:{lv.call_started}",
                     "last_tool": lv.last_tool, "last_tool_outcome": lv.last_tool_outcome,
                     "task_id": task_id,
                     "tokens_per_s": lv.tokens_per_s if lv.phase else 0.0}
            if task_id is not None and task_id not in titles:
                view["task_title"] = await store.read(_title, task_id)
        views.append(AgentView(**view))
    return DeckView(agents=views, meter=_meter(report, backend), pending_approvals=report.pending_approvals,
                    tasks=report.tasks, instance_running=report.instance is not None)


def _title(conn: sqlite3.Connection, task_id: int) -> str:
    row = conn.execute("SELECT title FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return row[0] if row else ""
