"""Task reducers: create, assign, move through the status machine, reprioritise."""

from __future__ import annotations

from agents.errors import (
    DelegationTooDeep,
    InvalidArgument,
    InvalidTransition,
    PermissionDenied,
    TaskTreeTooLarge,
    TooManySubtasks,
)
from agents.intake import title_of
from agents.limits import timestamp, whole_in
from agents.protocol import (
    OWNER,
    SYSTEM,
    TASK_STATUSES,
    ApprovalDecided,
    Task,
    TaskAssigned,
    TaskCreated,
    TaskStatus,
    TaskStatusChanged,
    TaskUpdated,
)
from agents.store import rows
from agents.store.tx import Tx

# Allowed status moves. done and cancelled are final; failed may be retried (-> queued).
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"active", "deferred", "blocked", "cancelled", "failed"}),
    "active": frozenset(
        {"waiting_approval", "blocked", "done", "failed", "deferred", "cancelled", "queued"}
    ),
    "waiting_approval": frozenset({"active", "blocked", "failed", "cancelled"}),
    "blocked": frozenset({"queued", "active", "failed", "cancelled"}),
    "deferred": frozenset({"queued", "active", "cancelled"}),
    "failed": frozenset({"queued"}),
    "done": frozenset(),
    "cancelled": frozenset(),
}

MAX_TITLE = 500
# Characters of a task's body (a message's cap is 20,000; a task may carry a pasted file).
# Every path that creates a task (CLI, cockpit, delegate, schedules) meets it here.
MAX_BODY = 100_000
MAX_PRIORITY = 9
# Deepest task tree: a root is depth 1. Agents delegating in a loop hit this, not the stack.
MAX_TASK_DEPTH = 32
# Most subtasks one task may have (fan-out), finished ones included.
MAX_SUBTASKS = 12
# Most unfinished subtasks in one task tree: depth and width caps alone still allow
# 12**32, and a crew delegating 3 per task made 15,213 tasks in 240 s without it.
MAX_LIVE_SUBTASKS = 64
# Most subtasks one agent may create per DELEGATION_WINDOW_S under tasks that agents
# created (runaway fan-out; a hand-off of the person's own task is not), counted from
# the tasks table so that a restart does not reset it.
MAX_DELEGATIONS = 30
DELEGATION_WINDOW_S = 60.0
LIVE = ("queued", "active", "waiting_approval", "blocked", "deferred")


def _depth(tx: Tx, task_id: int) -> int:
    """How many tasks from `task_id` up to its root, itself included (stops past the cap,
    so a corrupt parent loop cannot spin)."""
    row = tx.one(
        "WITH RECURSIVE up(id, parent_id, depth) AS ("
        " SELECT id, parent_id, 1 FROM tasks WHERE id = ?"
        " UNION ALL SELECT t.id, t.parent_id, up.depth + 1 FROM tasks t JOIN up ON t.id = up.parent_id"
        " WHERE up.depth <= ?) SELECT MAX(depth) FROM up",
        (task_id, MAX_TASK_DEPTH),
    )
    return int(row[0]) if row and row[0] is not None else 0


def _live_below(tx: Tx, root_id: int) -> list[int]:
    """The unfinished tasks of `root_id`'s tree, the root left out (job_id is the root)."""
    found = tx.execute(
        f"SELECT id FROM tasks WHERE job_id = ? AND id != job_id AND status IN ({', '.join('?' * len(LIVE))})"
        " ORDER BY id", (root_id, *LIVE),
    ).fetchall()
    return [row[0] for row in found]


def _check_priority(priority: int) -> None:
    whole_in(priority, "priority", 0, MAX_PRIORITY)


def _may_change(tx: Tx, actor: str, task: Task) -> None:
    if tx.privileged(actor) or task.owner == actor:
        return
    raise PermissionDenied(f"{actor} may not change task {task.id} (owned by {task.owner})")


def _interested(actor: str, task: Task, agents: frozenset[str]) -> str | None:
    """Who should hear of a change: the owner when someone else made it, else the creator."""
    if task.owner and task.owner != actor:
        return task.owner
    if task.created_by in agents and task.created_by != actor:
        return task.created_by
    return None


def create_task(
    tx: Tx,
    actor: str,
    title: str,
    *,
    body: str = "",
    owner: str | None = None,
    parent_id: int | None = None,
    priority: int = 1,
    deadline: float | None = None,
) -> Task:
    tx.check_actor(actor)
    title = title.strip()
    if not title:
        raise InvalidArgument("a task needs a title")
    if len(title) > MAX_TITLE:
        raise InvalidArgument(f"title longer than {MAX_TITLE} characters")
    if len(body) > MAX_BODY:
        raise InvalidArgument(f"task body longer than {MAX_BODY} characters")
    _check_priority(priority)
    if deadline is not None:
        deadline = timestamp(deadline, "deadline", tx.now)
    if owner is not None:
        tx.check_agent(owner)
    job_id: int | None = None
    if parent_id is not None:
        parent = rows.task(tx.row("tasks", parent_id))
        # An agent delegates only from a task it owns.
        if not tx.privileged(actor) and parent.owner != actor:
            raise PermissionDenied(f"{actor} may not add subtasks to task {parent_id}")
        if parent.status in ("done", "failed", "cancelled"):
            raise InvalidTransition(f"task {parent_id} is {parent.status}; no new subtasks under it")
        if _depth(tx, parent_id) >= MAX_TASK_DEPTH:
            raise DelegationTooDeep(
                f"task {parent_id} is already {MAX_TASK_DEPTH} levels deep; no further subtasks"
            )
        children = tx.one("SELECT COUNT(*) FROM tasks WHERE parent_id = ?", (parent_id,))
        if children and children[0] >= MAX_SUBTASKS:
            raise TooManySubtasks(f"task {parent_id} already has {MAX_SUBTASKS} subtasks; no more")
        if len(_live_below(tx, parent.job_id)) >= MAX_LIVE_SUBTASKS:
            raise TaskTreeTooLarge(f"task {parent.job_id}'s tree already has {MAX_LIVE_SUBTASKS} "
                                   "unfinished subtasks; no more")
        if not tx.privileged(actor) and not tx.privileged(parent.created_by):
            recent = tx.one("SELECT COUNT(*) FROM tasks t JOIN tasks p ON p.id = t.parent_id"
                            " WHERE t.created_by = ? AND t.created_at > ? AND p.created_by NOT IN (?, ?)",
                            (actor, tx.now - DELEGATION_WINDOW_S, OWNER, SYSTEM))
            if recent and recent[0] >= MAX_DELEGATIONS:
                raise InvalidArgument(f"{actor} already delegated {MAX_DELEGATIONS} tasks in the last "
                                      f"{DELEGATION_WINDOW_S:g} s; wait before delegating more")
        job_id = parent.job_id
    return _insert(tx, actor, title, body, owner, parent_id, job_id, priority, deadline, None)


def _insert(tx: Tx, created_by: str, title: str, body: str, owner: str | None, parent_id: int | None,
            job_id: int | None, priority: int, deadline: float | None, message_id: int | None) -> Task:
    cur = tx.execute(
        "INSERT INTO tasks (parent_id, job_id, owner, created_by, title, body, status, priority, "
        "deadline, created_at, updated_at, message_id) VALUES (?, 0, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
        (parent_id, owner, created_by, title, body, priority, deadline, tx.now, tx.now, message_id),
    )
    task_id = cur.lastrowid
    assert task_id is not None
    tx.execute("UPDATE tasks SET job_id = ? WHERE id = ?", (job_id or task_id, task_id))
    task = rows.task(tx.row("tasks", task_id))
    tx.emit(created_by, TaskCreated(task=task), subject=f"task:{task_id}", recipient=owner)
    return task


def task_from_message(tx: Tx, actor: str, message_id: int) -> Task | None:
    """A direct message to an agent, from the person or another agent and about no task,
    becomes a task for that agent, created by the sender. Idempotent: the message's task
    if it already has one; None for a message that asks for no work."""
    tx.check_actor(actor)
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not turn messages into tasks")
    msg = rows.message(tx.row("messages", message_id))
    if msg.recipient not in tx.agents or msg.sender == msg.recipient or msg.task_id is not None:
        return None
    existing = tx.one("SELECT * FROM tasks WHERE message_id = ?", (message_id,))
    if existing is not None:
        return rows.task(existing)
    title = title_of(msg.body) or "(empty message)"
    return _insert(tx, msg.sender, f"message from {msg.sender}: {title}", msg.body, msg.recipient, None,
                   None, 1, None, message_id)


def assign_task(tx: Tx, actor: str, task_id: int, owner: str | None) -> Task:
    """Privileged actors assign freely; an agent hands off its own task or claims an
    unassigned one for itself."""
    tx.check_actor(actor)
    task = rows.task(tx.row("tasks", task_id))
    if owner is not None:
        tx.check_agent(owner)
    if not tx.privileged(actor):
        claiming = task.owner is None and owner == actor
        if not (task.owner == actor or claiming):
            raise PermissionDenied(f"{actor} may not assign task {task_id} (owned by {task.owner})")
    if task.status in TRANSITIONS and not TRANSITIONS[task.status]:
        raise InvalidTransition(f"task {task_id} is {task.status}; it cannot be reassigned")
    if owner == task.owner:
        return task
    tx.execute("UPDATE tasks SET owner = ?, updated_at = ? WHERE id = ?", (owner, tx.now, task_id))
    tx.emit(
        actor,
        TaskAssigned(task_id=task_id, owner=owner, previous=task.owner),
        subject=f"task:{task_id}",
        recipient=owner,
    )
    return rows.task(tx.row("tasks", task_id))


def set_task_status(
    tx: Tx, actor: str, task_id: int, status: TaskStatus, result: str | None = None
) -> Task:
    tx.check_actor(actor)
    if status not in TASK_STATUSES:
        raise InvalidArgument(f"unknown task status {status!r}")
    task = rows.task(tx.row("tasks", task_id))
    _may_change(tx, actor, task)
    if status not in TRANSITIONS[task.status]:
        raise InvalidTransition(f"task {task_id} cannot go from {task.status} to {status}")
    attempts = task.attempts + (1 if status == "active" else 0)
    new_result = result if result is not None else task.result
    tx.execute(
        "UPDATE tasks SET status = ?, result = ?, attempts = ?, updated_at = ? WHERE id = ?",
        (status, new_result, attempts, tx.now, task_id),
    )
    tx.emit(
        actor,
        TaskStatusChanged(task_id=task_id, old=task.status, new=status, result=result),
        subject=f"task:{task_id}",
        recipient=_interested(actor, task, tx.agents),
    )
    if status == "cancelled":  # nobody waits for its approvals any more
        _cancel_pending_approvals(tx, actor, task_id)
    return rows.task(tx.row("tasks", task_id))


def _cancel_pending_approvals(tx: Tx, actor: str, task_id: int) -> None:
    pending = tx.execute(
        "SELECT id, agent FROM approvals WHERE task_id = ? AND status = 'pending' ORDER BY id", (task_id,)
    ).fetchall()
    for row in pending:
        tx.execute("UPDATE approvals SET status = 'cancelled', decided_at = ? WHERE id = ?",
                   (tx.now, row["id"]))
        decided = ApprovalDecided(approval_id=row["id"], status="cancelled", decided_by=None, scope=None)
        tx.emit(actor, decided, subject=f"approval:{row['id']}", recipient=row["agent"])


def update_task(
    tx: Tx,
    actor: str,
    task_id: int,
    *,
    priority: int | None = None,
    deadline: float | None = None,
) -> Task:
    tx.check_actor(actor)
    task = rows.task(tx.row("tasks", task_id))
    _may_change(tx, actor, task)
    if not TRANSITIONS[task.status]:
        raise InvalidTransition(f"task {task_id} is {task.status}; it cannot be changed")
    if priority is None and deadline is None:
        raise InvalidArgument("nothing to update")
    if priority is not None:
        _check_priority(priority)
    if deadline is not None:
        deadline = timestamp(deadline, "deadline", tx.now)
    tx.execute(
        "UPDATE tasks SET priority = COALESCE(?, priority), deadline = COALESCE(?, deadline), "
        "updated_at = ? WHERE id = ?",
        (priority, deadline, tx.now, task_id),
    )
    tx.emit(
        actor,
        TaskUpdated(task_id=task_id, priority=priority, deadline=deadline),
        subject=f"task:{task_id}",
        recipient=_interested(actor, task, tx.agents),
    )
    return rows.task(tx.row("tasks", task_id))


def cancel_task(tx: Tx, actor: str, task_id: int) -> list[int]:
    """The person cancels a task and every unfinished task below it (their pending
    approvals with them). Returns the ids cancelled, the task first."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not cancel tasks; only the person can")
    task = rows.task(tx.row("tasks", task_id))
    if not TRANSITIONS[task.status]:
        raise InvalidTransition(f"task {task_id} is already {task.status}")
    below = [row[0] for row in tx.execute(
        "WITH RECURSIVE down(id) AS (SELECT id FROM tasks WHERE parent_id = ?"
        " UNION SELECT t.id FROM tasks t JOIN down ON t.parent_id = down.id) SELECT id FROM down ORDER BY id",
        (task_id,),
    ).fetchall()]
    cancelled = []
    for tid in [task_id, *below]:
        current = rows.task(tx.row("tasks", tid))
        if "cancelled" in TRANSITIONS[current.status]:
            set_task_status(tx, actor, tid, "cancelled", "cancelled by the person")
            cancelled.append(tid)
    return cancelled


def stop_runaway_tree(tx: Tx, actor: str, task_id: int) -> list[int]:
    """Runaway delegation: the tree of task `task_id` holds MAX_LIVE_SUBTASKS unfinished
    subtasks. Its root fails (or, if it cannot, is cancelled), saying so, and every
    unfinished task in it is cancelled, their approvals with them. The owner of a task in
    the tree may ask, but only while the tree really is at the cap. Returns the ids ended."""
    tx.check_actor(actor)
    task = rows.task(tx.row("tasks", task_id))
    _may_change(tx, actor, task)
    root_id = task.job_id
    live = _live_below(tx, root_id)
    if len(live) < MAX_LIVE_SUBTASKS:
        raise InvalidArgument(f"task {root_id}'s tree has {len(live)} unfinished subtasks, "
                              f"under the cap of {MAX_LIVE_SUBTASKS}")
    why = (f"stopped by agentdeck: runaway delegation (task {root_id}'s tree reached "
           f"{MAX_LIVE_SUBTASKS} unfinished subtasks)")
    root = rows.task(tx.row("tasks", root_id))
    ended = []
    if "failed" in TRANSITIONS[root.status]:
        set_task_status(tx, SYSTEM, root_id, "failed", why)
        _cancel_pending_approvals(tx, SYSTEM, root_id)  # nobody waits for them any more
        ended.append(root_id)
    elif "cancelled" in TRANSITIONS[root.status]:  # deferred: it cannot fail from there
        set_task_status(tx, SYSTEM, root_id, "cancelled", why)
        ended.append(root_id)
    for tid in live:
        set_task_status(tx, SYSTEM, tid, "cancelled", why)
        ended.append(tid)
    return ended
