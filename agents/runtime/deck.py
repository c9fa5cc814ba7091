"""What a front end shows of the running crew, read at the front end's own pace.

Embedded (the TUI runs the host in its own process), each agent's state, streaming text
and last tool come from its live view and the meter from the backend's own snapshot; attached
(the TUI on the home of an instance running headless), they come from the store: the
agent_status rows and the meter the instance publishes with its heartbeat. Either way a
front end calls `read_deck` on a timer; nothing is pushed at it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from agents.crew.live import LiveView
from agents.inference.meter import MeterSnapshot
from agents.runtime.liveness import AgentHealth, agents_and_instance
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
    step: int = 0  # the act phase's step now, 0 outside it
    max_steps: int = 0  # 0 outside the act phase
    note: str = ""  # what a person should know about the call now ("retrying: …"), else ""
    phase_started: float = 0.0  # time.monotonic() the phase began (0 when none): the pane shows its age


class DeckView(msgspec.Struct, kw_only=True):
    agents: list[AgentView]
    meter: MeterSnapshot | None


Rows = tuple[list[AgentHealth], dict[str, object] | None, dict[int, str]]


def _rows(conn: sqlite3.Connection, names: list[str], live_task_ids: list[int]) -> Rows:
    """One read per tick: agents' health, the instance's meter, and the titles of every
    task an agent is on (by its status row or its live view)."""
    agents, _instance, slots = agents_and_instance(conn, names)
    ids = sorted({a.task_id for a in agents if a.task_id is not None} | set(live_task_ids))
    titles: dict[int, str] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        titles = dict(conn.execute(f"SELECT id, title FROM tasks WHERE id IN ({marks})", ids).fetchall())
    return agents, slots, titles


def _meter(slots: dict[str, object] | None, meter: MeterSnapshot | None) -> MeterSnapshot | None:
    if meter is not None:
        return meter
    if slots is None:
        return None
    try:
        return msgspec.convert(slots, MeterSnapshot)
    except msgspec.ValidationError:  # a meter from another version: show none rather than fail
        return None


async def read_deck(store: AsyncStore, names: list[str], *, live: dict[str, LiveView] | None = None,
                    meter: MeterSnapshot | None = None) -> DeckView:
    """`meter`: the backend's own snapshot when it runs in this process; else the one the
    instance publishes with its heartbeat."""
    live = live or {}
    live_ids = [lv.task_id for lv in live.values() if lv.task_id is not None]
    agents, slots, titles = await store.read(_rows, names, live_ids)
    views = []
    for agent in agents:
        view: dict[str, Any] = {"name": agent.name, "state": agent.state, "health": agent.health,
                                "task_id": agent.task_id, "phase": "", "text": "", "call": "", "fed": 0,
                                "last_tool": None, "last_tool_outcome": "", "tokens_per_s": 0.0,
                                "detail": agent.detail}
        lv = live.get(agent.name)
        if lv is not None:
            view |= {"phase": lv.phase, "text": lv.text, "fed": lv.fed,
                     "call": f"{lv.task_id}:{lv.phase}:{lv.call_started}",
                     "last_tool": lv.last_tool, "last_tool_outcome": lv.last_tool_outcome,
                     "task_id": lv.task_id if lv.task_id is not None else agent.task_id,
                     "tokens_per_s": lv.tokens_per_s if lv.phase else 0.0,
                     "step": lv.step, "max_steps": lv.max_steps, "note": lv.note,
                     "phase_started": lv.call_started if lv.phase else 0.0}
        view["task_title"] = titles.get(view["task_id"] or 0, "")
        views.append(AgentView(**view))
    return DeckView(agents=views, meter=_meter(slots, meter))
