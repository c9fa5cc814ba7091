"""Tool-call intents. The row is written before the tool runs, so a crash mid-call leaves a
`running` row that recovery marks `interrupted` and reports; it is never run again.

Each row names the process that runs it (pid and start time): another live process's call
(`agentdeck tool run` beside an instance) is its own to finish, never recovery's."""

from __future__ import annotations

import json
import os
from typing import Any

import psutil

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.protocol import SYSTEM, ToolCall, ToolCallStatus, ToolFinished, ToolStarted
from agents.store import rows
from agents.store.tx import Tx

FINAL_STATUSES = ("ok", "error", "timeout", "denied")
EVENT_PREVIEW = 2_000  # characters of a result carried by its event; the row keeps the rest
# Start times are in clock ticks (1/100 s on Linux): the same process reads the same value.
START_TIME_SLACK_S = 0.02

_this_process: tuple[int, float] | None = None


def this_process() -> tuple[int, float]:
    """(pid, start time) of the running process; read again after a fork."""
    global _this_process
    if _this_process is None or _this_process[0] != os.getpid():
        _this_process = (os.getpid(), psutil.Process().create_time())
    return _this_process


def owner_alive(pid: int, started: float) -> bool:
    """Is the process that started a call still running? A zombie (killed, not yet reaped)
    is not, nor a new process that got the same pid (another start time)."""
    try:
        proc = psutil.Process(pid)
        return (abs(proc.create_time() - started) <= START_TIME_SLACK_S
                and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by another user: cannot say, so leave it
        return True


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
    return not owner_alive(call.owner_pid, call.owner_started)


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
