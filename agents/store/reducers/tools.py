"""Tool-call intents. The row is written before the tool runs, so a crash mid-call leaves a
`running` row that recovery marks `interrupted` and reports; it is never run again.

Each row names the process that runs it (pid and start time): another live process's call
(`agentdeck tool run` beside an instance) is its own to finish, never recovery's."""

from __future__ import annotations

import json
from typing import Any

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.processes import process_alive, this_process
from agents.protocol import SYSTEM, ToolCall, ToolCallStatus, ToolFinished, ToolStarted
from agents.store import rows
from agents.store.tx import Tx

FINAL_STATUSES = ("ok", "error", "timeout", "denied")
EVENT_PREVIEW = 2_000  # characters of a result carried by its event; the row keeps the rest


def start_tool_call(
    tx: Tx, actor: str, tool: str, arguments: dict[str, Any], *, task_id: int | None = None
) -> ToolCall:
    tx.check_actor(actor)
    if actor not in tx.agents:
        raise PermissionDenied(f"{actor}: only agents call tools")
    if task_id is not None:
        task = rows.task(tx.row("tasks", task_id))
        if task.owner != actor:
            raise PermissionDenied(f"{actor} does not own task {task_id}")
    pid, started = this_process()
    cur = tx.execute(
        "INSERT INTO tool_calls (agent, task_id, tool, arguments, status, started_at, owner_pid, "
        "owner_started) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
        (actor, task_id, tool, json.dumps(arguments, sort_keys=True), tx.now, pid, started),
    )
    assert cur.lastrowid is not None
    call = rows.tool_call(tx.row("tool_calls", cur.lastrowid))
    tx.emit(actor, ToolStarted(call=call), subject=f"tool_call:{call.id}")
    return call


def finish_tool_call(
    tx: Tx, actor: str, call_id: int, status: ToolCallStatus, result: str | None = None
) -> ToolCall:
    tx.check_actor(actor)
    if status not in FINAL_STATUSES:
        raise InvalidArgument(f"a tool call finishes as one of {', '.join(FINAL_STATUSES)}")
    call = rows.tool_call(tx.row("tool_calls", call_id))
    if call.agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not finish {call.agent}'s tool call {call_id}")
    if call.status != "running":
        raise InvalidTransition(f"tool call {call_id} is already {call.status}")
    tx.execute(
        "UPDATE tool_calls SET status = ?, result = ?, finished_at = ? WHERE id = ?",
        (status, result, tx.now, call_id),
    )
    preview = result if result is None or len(result) <= EVENT_PREVIEW else result[:EVENT_PREVIEW] + "…"
    tx.emit(
        actor, ToolFinished(call_id=call_id, status=status, result=preview),
        subject=f"tool_call:{call_id}", recipient=call.agent,
    )
    return rows.tool_call(tx.row("tool_calls", call_id))


def _orphaned(call: ToolCall) -> bool:
    """No process will finish this call: its owner is gone, or is the process recovering
    now (which has started none yet), or was never recorded (a row from before owners)."""
    if call.owner_pid is None or call.owner_started is None:
        return True
    if (call.owner_pid, call.owner_started) == this_process():
        return True
    return not process_alive(call.owner_pid, call.owner_started)


def interrupt_running_tool_calls(tx: Tx, actor: str = SYSTEM) -> list[ToolCall]:
    """After a crash: every call still `running` whose process is gone is marked
    `interrupted` (never re-run). A live process's call (`tool run`) is left to it."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not interrupt tool calls")
    running = [call for call in (rows.tool_call(r) for r in tx.execute(
        "SELECT * FROM tool_calls WHERE status = 'running' ORDER BY id"
    ).fetchall()) if _orphaned(call)]
    for call in running:
        note = "interrupted: agentdeck stopped while this call was running; not run again"
        tx.execute(
            "UPDATE tool_calls SET status = 'interrupted', result = ?, finished_at = ? WHERE id = ?",
            (note, tx.now, call.id),
        )
        tx.emit(
            actor, ToolFinished(call_id=call.id, status="interrupted", result=note),
            subject=f"tool_call:{call.id}", recipient=call.agent,
        )
    return running
