"""Channels, members and messages. Roles rank owner > admin > moderator > member > agent;
the person is owner of every channel."""

from __future__ import annotations

from agents.errors import InvalidArgument, NotFound, PermissionDenied
from agents.protocol import (
    OWNER,
    SYSTEM,
    Channel,
    ChannelCreated,
    ChannelKind,
    ChannelMessage,
    ChannelRole,
    MemberChanged,
    MessageDeleted,
    MessagePosted,
)
from agents.store import rows
from agents.store.tx import Tx

RANK: dict[str, int] = {"owner": 4, "admin": 3, "moderator": 2, "member": 1, "agent": 0}
MAX_BODY = 20_000


def role_in(tx: Tx, channel_id: int, who: str) -> str | None:
    """`who`'s role in the channel, or None when not a member."""
    if who in (OWNER, SYSTEM):
        return "owner"
    row = tx.one(
        "SELECT role FROM channel_members WHERE channel_id = ? AND member = ?", (channel_id, who)
    )
    return row["role"] if row else None


def _channel(tx: Tx, channel: int | str) -> Channel:
    key = "id" if isinstance(channel, int) else "name"
    name = channel.lstrip("#") if isinstance(channel, str) else channel
    row = tx.one(f"SELECT * FROM channels WHERE {key} = ?", (name,))
    if row is None:
        raise NotFound(f"channel {channel} not found")
    return rows.channel(row)


def _check_member_name(tx: Tx, member: str) -> None:
    if member != OWNER:
        tx.check_agent(member, "member")


def _check_body(body: str) -> str:
    if not body.strip():
        raise InvalidArgument("a message needs a body")
    if len(body) > MAX_BODY:
        raise InvalidArgument(f"message longer than {MAX_BODY} characters")
    return body


def create_channel(
    tx: Tx, actor: str, name: str, *, kind: ChannelKind = "text", topic: str = ""
) -> Channel:
    tx.check_actor(actor)
    name = name.strip().lstrip("#")
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_" for c in name):
        raise InvalidArgument(f"bad channel name {name!r}: letters, digits, - and _")
    if tx.one("SELECT 1 FROM channels WHERE name = ?", (name,)):
        raise InvalidArgument(f"channel #{name} already exists")
    cur = tx.execute(
        "INSERT INTO channels (name, kind, topic, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
        (name, kind, topic, actor, tx.now),
    )
    channel_id = cur.lastrowid
    assert channel_id is not None
    tx.execute(
        "INSERT INTO channel_members (channel_id, member, role, joined_at) VALUES (?, ?, 'owner', ?)",
        (channel_id, OWNER, tx.now),
    )
    if not tx.privileged(actor):
        # An agent that makes a channel runs it, under the person.
        tx.execute(
            "INSERT INTO channel_members (channel_id, member, role, joined_at) "
            "VALUES (?, ?, 'admin', ?)",
            (channel_id, actor, tx.now),
        )
    channel = rows.channel(tx.row("channels", channel_id))
    tx.emit(actor, ChannelCreated(channel=channel), subject=f"channel:{channel_id}")
    return channel


def add_member(
    tx: Tx, actor: str, channel: int | str, member: str, role: ChannelRole = "agent"
) -> None:
    """Add a member or change its role. The actor must be moderator or above, outrank the
    member's current role, and grant only a role below its own."""
    tx.check_actor(actor)
    if role not in RANK:
        raise InvalidArgument(f"unknown channel role {role!r}")
    _check_member_name(tx, member)
    ch = _channel(tx, channel)
    mine = role_in(tx, ch.id, actor)
    current = role_in(tx, ch.id, member) if member != OWNER else "owner"
    if member == OWNER:
        raise InvalidArgument("the person is owner of every channel")
    if not tx.privileged(actor):
        if mine is None or RANK[mine] < RANK["moderator"]:
            raise PermissionDenied(f"{actor} is not a moderator of #{ch.name}")
        if RANK[role] >= RANK[mine]:
            raise PermissionDenied(f"{actor} ({mine}) may not grant {role} in #{ch.name}")
        if current is not None and RANK[current] >= RANK[mine]:
            raise PermissionDenied(f"{actor} ({mine}) may not change {member} ({current})")
    if current == role:
        return
    tx.execute(
        "INSERT INTO channel_members (channel_id, member, role, joined_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (channel_id, member) DO UPDATE SET role = excluded.role",
        (ch.id, member, role, tx.now),
    )
    tx.emit(
        actor,
        MemberChanged(channel_id=ch.id, member=member, role=role),
        subject=f"channel:{ch.id}",
        recipient=member,
    )


def remove_member(tx: Tx, actor: str, channel: int | str, member: str) -> None:
    """A member may leave; otherwise a moderator or above removes members it outranks."""
    tx.check_actor(actor)
    ch = _channel(tx, channel)
    current = role_in(tx, ch.id, member) if member not in (OWNER, SYSTEM) else "owner"
    if current is None:
        raise NotFound(f"{member} is not a member of #{ch.name}")
    if member in (OWNER, SYSTEM):
        raise PermissionDenied("the person cannot be removed from a channel")
    if not tx.privileged(actor) and actor != member:
        mine = role_in(tx, ch.id, actor)
        if mine is None or RANK[mine] < RANK["moderator"] or RANK[current] >= RANK[mine]:
            raise PermissionDenied(f"{actor} may not remove {member} ({current}) from #{ch.name}")
    tx.execute("DELETE FROM channel_members WHERE channel_id = ? AND member = ?", (ch.id, member))
    tx.emit(
        actor,
        MemberChanged(channel_id=ch.id, member=member, role=None),
        subject=f"channel:{ch.id}",
        recipient=member,
    )


def post_message(
    tx: Tx, actor: str, channel: int | str, body: str, *, task_id: int | None = None
) -> ChannelMessage:
    tx.check_actor(actor)
    _check_body(body)
    ch = _channel(tx, channel)
    if role_in(tx, ch.id, actor) is None:
        raise PermissionDenied(f"{actor} is not a member of #{ch.name}")
    if task_id is not None:
        tx.row("tasks", task_id)
    cur = tx.execute(
        "INSERT INTO messages (channel_id, sender, task_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
        (ch.id, actor, task_id, body, tx.now),
    )
    assert cur.lastrowid is not None
    msg = rows.message(tx.row("messages", cur.lastrowid))
    tx.emit(actor, MessagePosted(message=msg), subject=f"channel:{ch.id}")
    return msg


def send_direct(
    tx: Tx, actor: str, to: str, body: str, *, task_id: int | None = None
) -> ChannelMessage:
    tx.check_actor(actor)
    _check_body(body)
    _check_member_name(tx, to)
    if to == actor:
        raise InvalidArgument("a direct message needs another recipient")
    if task_id is not None:
        tx.row("tasks", task_id)
    cur = tx.execute(
        "INSERT INTO messages (sender, recipient, task_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
        (actor, to, task_id, body, tx.now),
    )
    assert cur.lastrowid is not None
    msg = rows.message(tx.row("messages", cur.lastrowid))
    tx.emit(actor, MessagePosted(message=msg), subject=f"dm:{to}", recipient=to)
    return msg


def delete_message(tx: Tx, actor: str, message_id: int) -> None:
    """The sender may delete its message; in a channel, a moderator or above may delete
    messages of members it outranks."""
    tx.check_actor(actor)
    msg = rows.message(tx.row("messages", message_id))
    if msg.deleted:
        raise NotFound(f"message {message_id} is already deleted")
    if not tx.privileged(actor) and msg.sender != actor:
        if msg.channel_id is None:
            raise PermissionDenied(f"{actor} may not delete message {message_id}")
        mine = role_in(tx, msg.channel_id, actor)
        theirs = role_in(tx, msg.channel_id, msg.sender) or "agent"
        if mine is None or RANK[mine] < RANK["moderator"] or RANK[theirs] >= RANK[mine]:
            raise PermissionDenied(f"{actor} may not delete message {message_id}")
    tx.execute("UPDATE messages SET deleted = 1 WHERE id = ?", (message_id,))
    subject = f"channel:{msg.channel_id}" if msg.channel_id else f"dm:{msg.recipient}"
    tx.emit(
        actor, MessageDeleted(message_id=message_id, channel_id=msg.channel_id), subject=subject
    )
