"""Memory reducers. An agent writes, compacts and deletes only its own entries."""

from __future__ import annotations

from collections.abc import Sequence

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.limits import whole_in
from agents.protocol import (
    Memory,
    MemoryCompacted,
    MemoryDeleted,
    MemoryKind,
    MemoryScope,
    MemoryWritten,
)
from agents.store import rows
from agents.store.tx import Tx

MAX_CONTENT = 20_000


def _clean_tags(tags: Sequence[str]) -> str:
    words = [t.strip().lower() for t in tags if t.strip()]
    if any(" " in w for w in words):
        raise InvalidArgument("tags are single words")
    return " ".join(dict.fromkeys(words))


def _insert(
    tx: Tx, actor: str, agent: str, content: str, kind: MemoryKind, scope: MemoryScope,
    tags: Sequence[str], importance: int, task_id: int | None,
) -> Memory:
    if not content.strip():
        raise InvalidArgument("a memory needs content")
    if len(content) > MAX_CONTENT:
        raise InvalidArgument(f"memory longer than {MAX_CONTENT} characters")
    whole_in(importance, "importance", 1, 5)
    if kind not in ("reflection", "fact", "summary", "journal"):
        raise InvalidArgument(f"unknown memory kind {kind!r}")
    if scope not in ("private", "shared"):
        raise InvalidArgument(f"unknown memory scope {scope!r}")
    if task_id is not None:
        tx.row("tasks", task_id)
    cur = tx.execute(
        "INSERT INTO memory (agent, scope, kind, content, tags, importance, task_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (agent, scope, kind, content, _clean_tags(tags), importance, task_id, tx.now),
    )
    assert cur.lastrowid is not None
    memory = rows.memory(tx.row("memory", cur.lastrowid))
    tx.emit(actor, MemoryWritten(memory=memory), subject=f"memory:{memory.id}")
    return memory


def write_memory(
    tx: Tx,
    actor: str,
    content: str,
    *,
    kind: MemoryKind = "fact",
    scope: MemoryScope = "private",
    tags: Sequence[str] = (),
    importance: int = 3,
    task_id: int | None = None,
    agent: str | None = None,
) -> Memory:
    """`agent` defaults to the actor; only the person or agentdeck may write for another."""
    tx.check_actor(actor)
    agent = agent or actor
    if agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not write {agent}'s memory")
    tx.check_agent(agent)
    return _insert(tx, actor, agent, content, kind, scope, tags, importance, task_id)


def compact_memory(
    tx: Tx,
    actor: str,
    memory_ids: Sequence[int],
    summary: str,
    *,
    tags: Sequence[str] = (),
    importance: int = 3,
) -> Memory:
    """Summarise entries into one long-term `summary`; the originals stay, marked."""
    tx.check_actor(actor)
    ids = list(dict.fromkeys(memory_ids))
    if not ids:
        raise InvalidArgument("nothing to compact")
    entries = [rows.memory(tx.row("memory", i)) for i in ids]
    owners = {m.agent for m in entries}
    if len(owners) != 1:
        raise InvalidArgument("compaction takes entries of one agent")
    agent = owners.pop()
    if agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not compact {agent}'s memory")
    done = [m.id for m in entries if m.compacted_into is not None]
    if done:
        raise InvalidTransition(f"memory {done[0]} is already compacted")
    scope = "shared" if any(m.scope == "shared" for m in entries) else "private"
    summary_row = _insert(tx, actor, agent, summary, "summary", scope, tags, importance, None)
    marks = ",".join("?" * len(ids))
    tx.execute(f"UPDATE memory SET compacted_into = ? WHERE id IN ({marks})", (summary_row.id, *ids))
    tx.emit(
        actor, MemoryCompacted(summary_id=summary_row.id, compacted=ids),
        subject=f"memory:{summary_row.id}",
    )
    return summary_row


def write_memory_vectors(tx: Tx, actor: str, model: str, vectors: Sequence[tuple[int, bytes]]) -> int:
    """Store each memory's vector (the indexer's; derived data, so no event). An entry
    deleted meanwhile is skipped. Returns how many were stored."""
    tx.check_actor(actor)
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not write memory vectors")
    stored = 0
    for memory_id, embedding in vectors:
        cur = tx.execute(
            "INSERT OR REPLACE INTO memory_vectors (memory_id, model, embedding) "
            "SELECT id, ?, ? FROM memory WHERE id = ?", (model, embedding, memory_id),
        )
        stored += cur.rowcount
    return stored


def delete_memory(tx: Tx, actor: str, memory_id: int) -> None:
    tx.check_actor(actor)
    memory = rows.memory(tx.row("memory", memory_id))
    if memory.agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not delete {memory.agent}'s memory")
    # Entries compacted into this one keep their text; they just lose the link.
    tx.execute("UPDATE memory SET compacted_into = NULL WHERE compacted_into = ?", (memory_id,))
    tx.execute("DELETE FROM memory WHERE id = ?", (memory_id,))
    tx.emit(actor, MemoryDeleted(memory_id=memory_id), subject=f"memory:{memory_id}")
