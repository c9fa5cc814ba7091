"""Agent status, heartbeats, inference usage, durable cursors and the instance row."""

from __future__ import annotations

from agents.errors import InvalidArgument, PermissionDenied
from agents.limits import DAY_S, number_in, whole_in
from agents.protocol import (
    AgentReflected,
    AgentState,
    AgentStatus,
    AgentStatusChanged,
    AgentStepped,
    AgentTriaged,
    InferenceUsage,
    UsageRecorded,
)
from agents.store import rows
from agents.store.tx import Tx

AGENT_STATES = AgentState.__args__  # type: ignore[attr-defined]
MAX_LABEL = 200  # characters of a usage row's backend or model name


def _own(tx: Tx, actor: str, agent: str, what: str) -> None:
    tx.check_actor(actor)
    tx.check_agent(agent)
    if agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not change {agent}'s {what}")


def set_agent_status(
    tx: Tx,
    actor: str,
    agent: str,
    state: AgentState,
    *,
    task_id: int | None = None,
    detail: str = "",
) -> AgentStatus:
    _own(tx, actor, agent, "status")
    if state not in AGENT_STATES:
        raise InvalidArgument(f"unknown agent state {state!r}")
    if task_id is not None:
        tx.row("tasks", task_id)
    tx.execute(
        "INSERT INTO agent_status (agent, state, task_id, detail, heartbeat_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent) DO UPDATE SET state = excluded.state, "
        "task_id = excluded.task_id, detail = excluded.detail, "
        "heartbeat_at = excluded.heartbeat_at, updated_at = excluded.updated_at",
        (agent, state, task_id, detail, tx.now, tx.now),
    )
    status = rows.agent_status(tx.row("agent_status", agent, key="agent"))
    tx.emit(actor, AgentStatusChanged(status=status), subject=f"agent:{agent}")
    return status


def heartbeat(tx: Tx, actor: str, agent: str) -> None:
    """Liveness only: touches heartbeat_at and appends no event (it would flood the log)."""
    _own(tx, actor, agent, "heartbeat")
    cur = tx.execute("UPDATE agent_status SET heartbeat_at = ? WHERE agent = ?", (tx.now, agent))
    if cur.rowcount == 0:
        raise InvalidArgument(f"{agent} has no status yet; set one first")


def record_usage(
    tx: Tx,
    actor: str,
    *,
    agent: str,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    queue_s: float,
    decode_s: float,
    task_id: int | None = None,
    backend: str | None = None,
    model: str | None = None,
) -> InferenceUsage:
    """One model call's tokens and time; `backend` and `model`: who served it (the ledger
    groups and prices by them), None when not known."""
    _own(tx, actor, agent, "usage")
    for name, label in (("backend", backend), ("model", model)):
        if label is not None and (not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL):
            raise InvalidArgument(f"{name}: a name of 1 to {MAX_LABEL} characters, or none")
    for name, count in (("prompt_tokens", prompt_tokens), ("cached_tokens", cached_tokens),
                        ("completion_tokens", completion_tokens)):
        whole_in(count, name, 0, 2**31)
    queue_s = number_in(queue_s, "queue_s", 0.0, DAY_S)
    decode_s = number_in(decode_s, "decode_s", 0.0, DAY_S)
    if task_id is not None:
        tx.row("tasks", task_id)
    cur = tx.execute(
        "INSERT INTO inference_usage (agent, task_id, prompt_tokens, cached_tokens, "
        "completion_tokens, queue_s, decode_s, ts, backend, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (agent, task_id, prompt_tokens, cached_tokens, completion_tokens, queue_s, decode_s,
         tx.now, backend, model),
    )
    assert cur.lastrowid is not None
    usage = rows.usage(tx.row("inference_usage", cur.lastrowid))
    tx.emit(actor, UsageRecorded(usage=usage), subject=f"agent:{agent}", recipient=None)
    return usage


def save_cursor(tx: Tx, actor: str, name: str, last_event_id: int) -> int:
    """Move a durable reader's cursor forward (never back). Bookkeeping, so no event."""
    tx.check_actor(actor)
    if not name:
        raise InvalidArgument("a cursor needs a name")
    # An agent moves only its own readers' cursors (`agent:NAME` or `agent:NAME:...`).
    own = name == f"agent:{actor}" or name.startswith(f"agent:{actor}:")
    if not tx.privileged(actor) and not own:
        raise PermissionDenied(f"{actor} may not move cursor {name!r}")
    tx.execute(
        "INSERT INTO cursors (name, last_event_id, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET last_event_id = MAX(last_event_id, excluded.last_event_id), "
        "updated_at = excluded.updated_at",
        (name, last_event_id, tx.now),
    )
    row = tx.one("SELECT last_event_id FROM cursors WHERE name = ?", (name,))
    assert row is not None
    return int(row["last_event_id"])


def save_cursors(tx: Tx, actor: str, positions: dict[str, int]) -> None:
    """Several cursors in one transaction (the bus flushes them together)."""
    for name, last_event_id in positions.items():
        save_cursor(tx, actor, name, last_event_id)


# --- the running instance (liveness, no events) ---

INSTANCE_STALE_S = 5.0


def claim_instance(tx: Tx, actor: str, pid: int, *, dead_pid: int | None = None) -> None:
    """Become the running instance, unless another live one holds the row. `dead_pid`:
    the caller checked that this process is gone (killed), so its row is taken over
    without waiting for its heartbeat to go stale."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not claim the instance")
    row = tx.one("SELECT pid, heartbeat_at FROM instance WHERE id = 1")
    fresh = row is not None and tx.now - row["heartbeat_at"] < INSTANCE_STALE_S
    if row and row["pid"] not in (pid, dead_pid) and fresh:
        raise InvalidArgument(f"another agentdeck instance (pid {row['pid']}) is running on this home")
    tx.execute(
        "INSERT INTO instance (id, pid, started_at, heartbeat_at) VALUES (1, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at, "
        "heartbeat_at = excluded.heartbeat_at, meter = NULL",
        (pid, tx.now, tx.now),
    )


def instance_heartbeat(tx: Tx, actor: str, pid: int, meter: bytes | None = None) -> bool:
    """False when the row is no longer ours (another instance took over): stop."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not touch the instance row")
    cur = tx.execute(
        "UPDATE instance SET heartbeat_at = ?, meter = COALESCE(?, meter) WHERE id = 1 AND pid = ?",
        (tx.now, meter, pid),
    )
    return cur.rowcount == 1


def release_instance(tx: Tx, actor: str, pid: int) -> None:
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not release the instance")
    tx.execute("DELETE FROM instance WHERE id = 1 AND pid = ?", (pid,))


def record_phase(tx: Tx, actor: str, payload: AgentTriaged | AgentStepped | AgentReflected) -> int:
    """An agent's phase result on one of its tasks, as an event (the story `log` tells)."""
    tx.check_actor(actor)
    task = rows.task(tx.row("tasks", payload.task_id))
    if task.owner != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not record phases of task {task.id} (owned by {task.owner})")
    return tx.emit(actor, payload, subject=f"task:{task.id}")
