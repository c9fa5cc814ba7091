"""The schema, as forward migrations. `PRAGMA user_version` holds the applied version.

Each migration runs in one transaction with the version bump, so a crash mid-migration
leaves the previous version intact. Never edit a released migration: add the next one.
"""

from __future__ import annotations

_V1 = """
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        REAL    NOT NULL,
    kind      TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    subject   TEXT    NOT NULL DEFAULT '',   -- 'task:12', 'approval:3', 'channel:1' ...
    recipient TEXT,                          -- the agent an event is addressed to, if any
    payload   BLOB    NOT NULL               -- msgpack Envelope(v, body)
);
CREATE INDEX events_by_recipient ON events (recipient, id);
CREATE INDEX events_by_kind ON events (kind, id);

CREATE TABLE tasks (
    id         INTEGER PRIMARY KEY,
    parent_id  INTEGER REFERENCES tasks (id),
    job_id     INTEGER NOT NULL,             -- the root of this task's tree
    owner      TEXT,                         -- agent; NULL = unassigned (for the router)
    created_by TEXT    NOT NULL,
    title      TEXT    NOT NULL,
    body       TEXT    NOT NULL DEFAULT '',
    status     TEXT    NOT NULL CHECK (status IN ('queued', 'active', 'waiting_approval',
                   'blocked', 'done', 'failed', 'deferred', 'cancelled')),
    priority   INTEGER NOT NULL DEFAULT 0,
    result     TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    deadline   REAL,
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL
);
CREATE INDEX tasks_by_owner ON tasks (owner, status);
CREATE INDEX tasks_by_parent ON tasks (parent_id);

CREATE TABLE channels (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('text', 'agent_log')),
    topic      TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE channel_members (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    member     TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'moderator', 'member', 'agent')),
    joined_at  REAL    NOT NULL,
    PRIMARY KEY (channel_id, member)
);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    channel_id INTEGER REFERENCES channels (id),
    sender     TEXT    NOT NULL,
    recipient  TEXT,
    task_id    INTEGER REFERENCES tasks (id),
    body       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    CHECK (channel_id IS NOT NULL OR recipient IS NOT NULL)
);
CREATE INDEX messages_by_channel ON messages (channel_id, id);
CREATE INDEX messages_by_recipient ON messages (recipient, id);

CREATE TABLE memory (
    id             INTEGER PRIMARY KEY,
    agent          TEXT    NOT NULL,
    scope          TEXT    NOT NULL CHECK (scope IN ('private', 'shared')),
    kind           TEXT    NOT NULL CHECK (kind IN ('reflection', 'fact', 'summary', 'journal')),
    content        TEXT    NOT NULL,
    tags           TEXT    NOT NULL DEFAULT '',   -- space separated
    importance     INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 5),
    task_id        INTEGER REFERENCES tasks (id),
    compacted_into INTEGER REFERENCES memory (id),
    created_at     REAL    NOT NULL
);
CREATE INDEX memory_by_agent ON memory (agent, kind, compacted_into);

CREATE VIRTUAL TABLE memory_fts USING fts5 (
    content, tags, content = 'memory', content_rowid = 'id'
);
CREATE TRIGGER memory_fts_insert AFTER INSERT ON memory BEGIN
    INSERT INTO memory_fts (rowid, content, tags) VALUES (new.id, new.content, new.tags);
END;
CREATE TRIGGER memory_fts_delete AFTER DELETE ON memory BEGIN
    INSERT INTO memory_fts (memory_fts, rowid, content, tags)
    VALUES ('delete', old.id, old.content, old.tags);
END;
CREATE TRIGGER memory_fts_update AFTER UPDATE OF content, tags ON memory BEGIN
    INSERT INTO memory_fts (memory_fts, rowid, content, tags)
    VALUES ('delete', old.id, old.content, old.tags);
    INSERT INTO memory_fts (rowid, content, tags) VALUES (new.id, new.content, new.tags);
END;

CREATE TABLE tool_calls (
    id          INTEGER PRIMARY KEY,
    agent       TEXT    NOT NULL,
    task_id     INTEGER REFERENCES tasks (id),
    tool        TEXT    NOT NULL,
    arguments   TEXT    NOT NULL,            -- JSON
    status      TEXT    NOT NULL CHECK (status IN ('running', 'ok', 'error', 'timeout',
                    'denied', 'interrupted')),
    result      TEXT,
    started_at  REAL    NOT NULL,
    finished_at REAL
);
CREATE INDEX tool_calls_by_status ON tool_calls (status);

CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY,
    agent        TEXT    NOT NULL,
    task_id      INTEGER REFERENCES tasks (id),
    tool_call_id INTEGER REFERENCES tool_calls (id),
    tool         TEXT    NOT NULL,
    arguments    TEXT    NOT NULL,           -- JSON
    resolved     TEXT    NOT NULL,           -- absolute path, parsed command
    reason       TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'denied',
                     'expired', 'cancelled')),
    decided_by   TEXT CHECK (decided_by IN ('user', 'rule', 'timeout', 'headless_policy')),
    scope        TEXT CHECK (scope IN ('once', 'session', 'always')),
    created_at   REAL    NOT NULL,
    expires_at   REAL    NOT NULL,
    decided_at   REAL
);
CREATE INDEX approvals_by_status ON approvals (status, expires_at);

CREATE TABLE permission_rules (
    id         INTEGER PRIMARY KEY,
    agent      TEXT NOT NULL,                -- '*' = every agent
    tool       TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    decision   TEXT NOT NULL CHECK (decision IN ('allow', 'ask', 'deny')),
    source     TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (agent, tool, pattern)
);

CREATE TABLE agent_status (
    agent        TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    task_id      INTEGER REFERENCES tasks (id),
    detail       TEXT NOT NULL DEFAULT '',
    heartbeat_at REAL,
    updated_at   REAL NOT NULL
);

CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY,
    agent       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    interval_s  REAL    NOT NULL CHECK (interval_s > 0),
    body        TEXT    NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    next_run_at REAL    NOT NULL,
    last_run_at REAL,
    UNIQUE (agent, name)
);

CREATE TABLE inference_usage (
    id                INTEGER PRIMARY KEY,
    agent             TEXT    NOT NULL,
    task_id           INTEGER REFERENCES tasks (id),
    prompt_tokens     INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    queue_s           REAL    NOT NULL,
    decode_s          REAL    NOT NULL,
    ts                REAL    NOT NULL
);

CREATE TABLE cursors (
    name          TEXT PRIMARY KEY,          -- a durable reader, e.g. 'agent:dev'
    last_event_id INTEGER NOT NULL,
    updated_at    REAL    NOT NULL
);

-- The running instance (at most one row): lets the CLI tell whether one is up, and read
-- the slot meter it publishes. Liveness data, not state: no events.
CREATE TABLE instance (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    pid          INTEGER NOT NULL,
    started_at   REAL    NOT NULL,
    heartbeat_at REAL    NOT NULL,
    meter        BLOB                        -- msgpack snapshot of the inference meter
);

INSERT INTO channels (name, kind, topic, created_by, created_at)
    VALUES ('general', 'text', 'everyone', 'system', 0),
           ('agent-logs', 'agent_log', 'what the agents did', 'system', 0);
INSERT INTO channel_members (channel_id, member, role, joined_at)
    SELECT id, 'owner', 'owner', 0 FROM channels;
"""

# (version, script). Append only.
# v2: why a schedule last failed to fire (it is then disabled, never retried every tick).
_V2 = "ALTER TABLE schedules ADD COLUMN last_error TEXT;"

# v3: the rule an `always` answer saves, computed by the gate and shown with the approval.
# and why the policy asks (the agent's own words stay in `reason`).
_V3 = """
ALTER TABLE approvals ADD COLUMN always_rule TEXT;
ALTER TABLE approvals ADD COLUMN ask_reason TEXT;
"""

# v4: a schedule may follow a cron expression instead of a fixed interval.
_V4 = "ALTER TABLE schedules ADD COLUMN cron TEXT;"

# v5: a task started by a direct message to an agent points at it; one task per message,
# however often at-least-once delivery hands the message over.
_V5 = """
ALTER TABLE tasks ADD COLUMN message_id INTEGER REFERENCES messages (id);
CREATE UNIQUE INDEX tasks_by_message ON tasks (message_id) WHERE message_id IS NOT NULL;
"""

# v6: the process that runs a tool call (pid, and its start time so that a reused pid is not
# taken for it): recovery interrupts only calls whose process is gone, never another live
# process's (`agentdeck tool run`). NULL on older rows: those are interrupted as before.
_V6 = """
ALTER TABLE tool_calls ADD COLUMN owner_pid INTEGER;
ALTER TABLE tool_calls ADD COLUMN owner_started REAL;
"""

# v7: each memory's meaning, as an all-MiniLM-L6-v2 vector (384 float32, little-endian:
# sqlite-vec's format), written by the host's indexer and compared by sqlite-vec's
# vec_distance_cosine. A plain table, not a vec0 virtual one: a schema that needs a
# loadable extension could not even be opened where the extension is missing (a Python
# built without extension loading), and vec0's k-nearest search is a full scan anyway at
# the scale of one crew's memories, where this is one join with the visibility rules.
_V7 = """
CREATE TABLE memory_vectors (
    memory_id INTEGER PRIMARY KEY REFERENCES memory (id) ON DELETE CASCADE,
    model     TEXT NOT NULL,
    embedding BLOB NOT NULL CHECK (length(embedding) = 1536)
);
"""

# v8: what each writing tool call did to the workspace, as two trees of a shadow git
# repository under the home (`files`: the changed paths with +/- counts; `skipped`: what
# was not checkpointed and why), and undos/redos of a task's changes with their plan
# (each file's state to restore and the state it must have now), so that a second
# `undo` completes one a crash cut short. And the diff an approval of a write shows.
_V8 = """
CREATE TABLE checkpoints (
    id           INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('call', 'undo', 'redo')),
    actor        TEXT    NOT NULL,
    task_id      INTEGER REFERENCES tasks (id),  -- call: its task; undo/redo: the task undone
    tool_call_id INTEGER REFERENCES tool_calls (id),
    workspace    TEXT    NOT NULL,
    before_tree  TEXT,
    after_tree   TEXT,
    status       TEXT    NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    files        TEXT    NOT NULL DEFAULT '[]',  -- JSON
    skipped      TEXT    NOT NULL DEFAULT '[]',  -- JSON
    plan         TEXT,                           -- JSON, undo/redo only
    note         TEXT    NOT NULL DEFAULT '',
    created_at   REAL    NOT NULL,
    finished_at  REAL
);
CREATE INDEX checkpoints_by_task ON checkpoints (task_id, id);
ALTER TABLE approvals ADD COLUMN preview TEXT;
"""

# v9: MCP tools as pinned and as last listed. A tool is offered to agents only while what
# the server lists (`description`, `schema_hash`) is what a person approved (`pinned_*`):
# the first listing pins itself; a changed description or schema, or a tool new since,
# waits for `agentdeck mcp approve SERVER`.
_V9 = """
CREATE TABLE mcp_tools (
    server             TEXT NOT NULL,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL,
    input_schema       TEXT NOT NULL,            -- JSON, as listed
    schema_hash        TEXT NOT NULL,            -- sha256 of name, description and schema
    pinned_description TEXT,
    pinned_schema      TEXT,
    pinned_hash        TEXT,                     -- NULL: never approved
    listed             INTEGER NOT NULL DEFAULT 1,  -- 0: the server no longer lists it
    first_seen         REAL NOT NULL,
    changed_at         REAL NOT NULL,
    approved_at        REAL,
    PRIMARY KEY (server, name)
);
"""

# v10: notifications and their delivery (per approval, task or breaker: each channel's
# attempts, HTTP status, outcome), so `agentdeck approvals` can say whether the person was
# told; and which backend and model each model call used, for the token ledger.
_V10 = """
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY,
    event       TEXT    NOT NULL,             -- approval.requested, task.failed, breaker.open
    subject     TEXT    NOT NULL,             -- 'approval:3', 'task:12', 'backend:gpu'
    approval_id INTEGER REFERENCES approvals (id),
    channel     TEXT    NOT NULL CHECK (channel IN ('webhook', 'desktop', 'terminal')),
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'retrying', 'failed', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    detail      TEXT    NOT NULL DEFAULT '',
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE INDEX notifications_by_approval ON notifications (approval_id);
ALTER TABLE inference_usage ADD COLUMN backend TEXT;
ALTER TABLE inference_usage ADD COLUMN model TEXT;
CREATE INDEX inference_usage_by_task ON inference_usage (task_id);
"""

MIGRATIONS: list[tuple[int, str]] = [(1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5), (6, _V6),
                                     (7, _V7), (8, _V8), (9, _V9), (10, _V10)]
SCHEMA_VERSION = MIGRATIONS[-1][0]
