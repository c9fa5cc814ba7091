"""Protocol types: every row and event that crosses a boundary, as msgspec Structs.

Events are stored as msgpack `Envelope(v, body)`. The body is a tagged union whose tag is
the event kind, so a stored event decodes back into the exact payload type. An event
written by a newer agentdeck (higher `v`) or of an unknown kind gives a ProtocolError.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from agents.errors import ProtocolError

PROTOCOL_VERSION = 1

OWNER = "owner"  # the person at the keyboard (or the CLI in another terminal)
SYSTEM = "system"  # agentdeck itself: recovery, expiry, supervisor, scheduler

TaskStatus = Literal[
    "queued", "active", "waiting_approval", "blocked", "done", "failed", "deferred", "cancelled"
]
TASK_STATUSES: tuple[str, ...] = TaskStatus.__args__  # type: ignore[attr-defined]
TERMINAL_TASK_STATUSES = frozenset({"done", "cancelled"})

ChannelRole = Literal["owner", "admin", "moderator", "member", "agent"]
CHANNEL_ROLES: tuple[str, ...] = ChannelRole.__args__  # type: ignore[attr-defined]
ChannelKind = Literal["text", "agent_log"]
MemoryScope = Literal["private", "shared"]
MemoryKind = Literal["reflection", "fact", "summary", "journal"]
ApprovalStatus = Literal["pending", "approved", "denied", "expired", "cancelled"]
ApprovalScope = Literal["once", "session", "always"]
DecidedBy = Literal["user", "rule", "timeout", "headless_policy"]
RuleDecision = Literal["allow", "ask", "deny"]
ToolCallStatus = Literal["running", "ok", "error", "timeout", "denied", "interrupted"]
AgentState = Literal[
    "offline", "idle", "triage", "acting", "reflecting", "waiting", "paused", "stopped", "crashed"
]
Health = Literal["green", "amber", "red"]


# --- rows --------------------------------------------------------------------------------


class Task(msgspec.Struct, kw_only=True):
    id: int
    parent_id: int | None
    job_id: int
    owner: str | None
    created_by: str
    title: str
    body: str
    status: TaskStatus
    priority: int
    result: str | None
    attempts: int
    deadline: float | None
    created_at: float
    updated_at: float
    message_id: int | None = None  # the direct message that asked for it, if one did


class Channel(msgspec.Struct, kw_only=True):
    id: int
    name: str
    kind: ChannelKind
    topic: str
    created_by: str
    created_at: float


class ChannelMember(msgspec.Struct, kw_only=True):
    channel_id: int
    member: str
    role: ChannelRole
    joined_at: float


class ChannelMessage(msgspec.Struct, kw_only=True):
    id: int
    channel_id: int | None  # None: a direct message to `recipient`
    sender: str
    recipient: str | None
    task_id: int | None
    body: str
    created_at: float
    deleted: bool = False


class Memory(msgspec.Struct, kw_only=True):
    id: int
    agent: str
    scope: MemoryScope
    kind: MemoryKind
    content: str
    tags: list[str]
    importance: int
    task_id: int | None
    compacted_into: int | None
    created_at: float


class Approval(msgspec.Struct, kw_only=True):
    id: int
    agent: str
    task_id: int | None
    tool_call_id: int | None
    tool: str
    arguments: dict[str, object]
    resolved: str  # what it resolves to: an absolute path, a parsed command
    reason: str
    status: ApprovalStatus
    decided_by: DecidedBy | None
    scope: ApprovalScope | None
    created_at: float
    expires_at: float
    decided_at: float | None
    # The allow rule an `always` answer saves (None: `always` is not offered).
    always_rule: str | None = None
    ask_reason: str | None = None  # why the policy asks; `reason` is the agent's own words
    # What a write would change, as a unified diff (capped), computed from the arguments.
    preview: str | None = None


class PermissionRule(msgspec.Struct, kw_only=True):
    id: int
    agent: str  # "*" for every agent
    tool: str
    pattern: str
    decision: RuleDecision
    source: str  # default, config, user, approval
    created_at: float


class ToolCall(msgspec.Struct, kw_only=True):
    id: int
    agent: str
    task_id: int | None
    tool: str
    arguments: dict[str, object]
    status: ToolCallStatus
    result: str | None
    started_at: float
    finished_at: float | None
    # The process running it (pid, start time); None on calls recorded before owners were.
    owner_pid: int | None = None
    owner_started: float | None = None


class FileState(msgspec.Struct, frozen=True):
    """A path's content as git names it: mode (100644, 100755, 120000) and blob id."""

    mode: str
    blob: str


class ChangedFile(msgspec.Struct, kw_only=True, frozen=True):
    """One path's change between two checkpoints. `status`: A added, D deleted, M modified,
    T type changed (file <-> link). Line counts are None for a binary file."""

    path: str
    status: str
    old_mode: str
    new_mode: str
    old_blob: str
    new_blob: str
    added: int | None = None
    removed: int | None = None


class NotCheckpointed(msgspec.Struct, kw_only=True, frozen=True):
    """A path a checkpoint could not record (over a cap, unreadable), and why."""

    path: str
    reason: str


class PlannedFile(msgspec.Struct, kw_only=True, frozen=True):
    """One file of an undo or redo: the state it is put in (None: removed) and the state
    it must be in now for that to be safe (None: absent)."""

    path: str
    target: FileState | None
    expected: FileState | None


CheckpointKind = Literal["call", "undo", "redo"]
CheckpointStatus = Literal["running", "done", "failed"]


class Checkpoint(msgspec.Struct, kw_only=True):
    """What one writing tool call did to the workspace (kind `call`), or an undo or redo of a
    task's changes (with its plan, so a second run completes one a crash cut short)."""

    id: int
    kind: CheckpointKind
    actor: str
    task_id: int | None
    tool_call_id: int | None
    workspace: str
    before_tree: str | None
    after_tree: str | None
    status: CheckpointStatus
    files: list[ChangedFile]
    skipped: list[NotCheckpointed]
    plan: list[PlannedFile] | None
    note: str
    created_at: float
    finished_at: float | None


class McpToolListed(msgspec.Struct, kw_only=True, frozen=True):
    """One tool as an MCP server lists it."""

    name: str
    description: str
    input_schema: str  # JSON text, as listed


class McpTool(msgspec.Struct, kw_only=True):
    """An MCP tool as recorded: as last listed, and as a person approved it (pinned)."""

    server: str
    name: str
    description: str
    input_schema: str
    schema_hash: str
    pinned_description: str | None
    pinned_schema: str | None
    pinned_hash: str | None
    listed: bool
    first_seen: float
    changed_at: float
    approved_at: float | None

    @property
    def offered(self) -> bool:
        """Agents see it only while it is listed as it was approved."""
        return self.listed and self.pinned_hash == self.schema_hash

    @property
    def state(self) -> str:
        if not self.listed:
            return "gone"
        if self.pinned_hash is None:
            return "new"
        return "pinned" if self.pinned_hash == self.schema_hash else "changed"


class AgentStatus(msgspec.Struct, kw_only=True):
    agent: str
    state: AgentState
    task_id: int | None
    detail: str
    heartbeat_at: float | None
    updated_at: float


class Schedule(msgspec.Struct, kw_only=True):
    id: int
    agent: str
    name: str
    interval_s: float
    body: str
    enabled: bool
    next_run_at: float
    last_run_at: float | None
    # Why it last failed to fire; a failed schedule is disabled until set again.
    last_error: str | None = None
    cron: str | None = None  # when set, runs follow it (interval_s: its usual gap)


class InferenceUsage(msgspec.Struct, kw_only=True):
    id: int
    agent: str
    task_id: int | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    queue_s: float
    decode_s: float
    ts: float
    backend: str | None = None  # the named backend that served it; None on rows before v10
    model: str | None = None  # the model it named (prices are keyed by it)


# --- event payloads (tag = event kind) ---------------------------------------------------


class TaskCreated(msgspec.Struct, tag="task.created", kw_only=True):
    task: Task


class TaskAssigned(msgspec.Struct, tag="task.assigned", kw_only=True):
    task_id: int
    owner: str | None
    previous: str | None


class TaskStatusChanged(msgspec.Struct, tag="task.status", kw_only=True):
    task_id: int
    old: TaskStatus
    new: TaskStatus
    result: str | None = None


class TaskUpdated(msgspec.Struct, tag="task.updated", kw_only=True):
    task_id: int
    priority: int | None = None
    deadline: float | None = None


class ChannelCreated(msgspec.Struct, tag="channel.created", kw_only=True):
    channel: Channel


class MemberChanged(msgspec.Struct, tag="channel.member", kw_only=True):
    channel_id: int
    member: str
    role: ChannelRole | None  # None: removed


class MessagePosted(msgspec.Struct, tag="message.posted", kw_only=True):
    message: ChannelMessage


class MessageDeleted(msgspec.Struct, tag="message.deleted", kw_only=True):
    message_id: int
    channel_id: int | None


class MemoryWritten(msgspec.Struct, tag="memory.written", kw_only=True):
    memory: Memory


class MemoryCompacted(msgspec.Struct, tag="memory.compacted", kw_only=True):
    summary_id: int
    compacted: list[int]


class MemoryDeleted(msgspec.Struct, tag="memory.deleted", kw_only=True):
    memory_id: int


class ApprovalRequested(msgspec.Struct, tag="approval.requested", kw_only=True):
    approval: Approval


class ApprovalDecided(msgspec.Struct, tag="approval.decided", kw_only=True):
    approval_id: int
    status: ApprovalStatus
    decided_by: DecidedBy | None
    scope: ApprovalScope | None
    rule_id: int | None = None


class RuleAdded(msgspec.Struct, tag="rule.added", kw_only=True):
    rule: PermissionRule


class RuleRemoved(msgspec.Struct, tag="rule.removed", kw_only=True):
    rule_id: int


class ToolStarted(msgspec.Struct, tag="tool.started", kw_only=True):
    call: ToolCall


class ToolFinished(msgspec.Struct, tag="tool.finished", kw_only=True):
    call_id: int
    status: ToolCallStatus
    result: str | None


class AgentStatusChanged(msgspec.Struct, tag="agent.status", kw_only=True):
    status: AgentStatus


class ScheduleSet(msgspec.Struct, tag="schedule.set", kw_only=True):
    schedule: Schedule


class ScheduleFired(msgspec.Struct, tag="schedule.fired", kw_only=True):
    schedule_id: int
    task_id: int
    next_run_at: float


class ScheduleSkipped(msgspec.Struct, tag="schedule.skipped", kw_only=True):
    """A due run queued no task: the task of the schedule's last run is not finished."""

    schedule_id: int
    pending_task_id: int
    next_run_at: float


class AgentTriaged(msgspec.Struct, tag="agent.triage", kw_only=True):
    """An agent decided what to do with a task: by a cheap rule or by a model call."""

    task_id: int
    action: str  # act, delegate, defer, ignore
    reason: str
    delegate_to: str | None = None
    by: str = "model"  # model or rule


class AgentStepped(msgspec.Struct, tag="agent.step", kw_only=True):
    """One act step: a tool call through the gate (with its outcome), or the final answer."""

    task_id: int
    step: int
    tool: str | None  # None: the final answer
    decision: str | None  # the gate's allow, ask or deny
    status: str  # ok, error, timeout, denied, final, invalid
    summary: str  # the arguments or the answer, shortened


class AgentReflected(msgspec.Struct, tag="agent.reflect", kw_only=True):
    task_id: int
    outcome: str  # success, partial, failure
    lesson: str
    importance: int
    memory_id: int | None
    by: str = "model"  # model, or fallback: the model's reflection did not parse


class ScheduleRemoved(msgspec.Struct, tag="schedule.removed", kw_only=True):
    schedule_id: int
    agent: str
    name: str


class ScheduleFailed(msgspec.Struct, tag="schedule.failed", kw_only=True):
    schedule_id: int
    error: str


class UsageRecorded(msgspec.Struct, tag="inference.usage", kw_only=True):
    usage: InferenceUsage


class FilesChanged(msgspec.Struct, tag="files.changed", kw_only=True):
    checkpoint: Checkpoint


class FilesRestored(msgspec.Struct, tag="files.restored", kw_only=True):
    checkpoint: Checkpoint  # an undo or redo, as it now stands (running, done, failed)


class McpToolsChanged(msgspec.Struct, tag="mcp.changed", kw_only=True):
    server: str
    tools: list[str]  # new or changed since pinned: withheld until a person approves
    approved: bool = False  # the event of an approval


Payload = (
    TaskCreated | TaskAssigned | TaskStatusChanged | TaskUpdated
    | ChannelCreated | MemberChanged | MessagePosted | MessageDeleted
    | MemoryWritten | MemoryCompacted | MemoryDeleted
    | ApprovalRequested | ApprovalDecided | RuleAdded | RuleRemoved
    | ToolStarted | ToolFinished | AgentStatusChanged
    | ScheduleSet | ScheduleFired | ScheduleSkipped | ScheduleRemoved | ScheduleFailed
    | UsageRecorded | FilesChanged | FilesRestored | McpToolsChanged
    | AgentTriaged | AgentStepped | AgentReflected
)  # fmt: skip

EVENT_KINDS: frozenset[str] = frozenset(
    t.__struct_config__.tag for t in Payload.__args__  # type: ignore[attr-defined]
)


def kind_of(payload: Payload) -> str:
    return type(payload).__struct_config__.tag  # type: ignore[return-value]


class Envelope(msgspec.Struct, array_like=True):
    v: int
    body: Payload


class _VersionOnly(msgspec.Struct, array_like=True):
    v: int


class Event(msgspec.Struct, kw_only=True):
    """One row of the append-only log, decoded."""

    id: int
    ts: float
    kind: str
    actor: str
    subject: str
    recipient: str | None
    payload: Payload


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_version_decoder = msgspec.msgpack.Decoder(_VersionOnly)


def encode_payload(payload: Payload) -> bytes:
    return _encoder.encode(Envelope(PROTOCOL_VERSION, payload))


def decode_payload(blob: bytes, event_id: int | None = None) -> Payload:
    """Decode a stored payload; unknown versions and kinds raise ProtocolError."""
    where = f"event {event_id}" if event_id is not None else "event"
    try:
        version = _version_decoder.decode(blob).v
    except msgspec.DecodeError as err:
        raise ProtocolError(f"{where}: unreadable payload ({err})") from None
    if version > PROTOCOL_VERSION:
        raise ProtocolError(
            f"{where} uses protocol version {version}; this agentdeck reads up to "
            f"{PROTOCOL_VERSION} — upgrade agentdeck"
        )
    if version < 1:
        raise ProtocolError(f"{where} has invalid protocol version {version} (versions start at 1)")
    try:
        return _envelope_decoder.decode(blob).body
    except msgspec.DecodeError as err:
        raise ProtocolError(f"{where}: cannot decode payload ({err})") from None


def to_builtins(obj: object) -> object:
    """JSON-ready form of any protocol struct (for --json output)."""
    return msgspec.to_builtins(obj)
