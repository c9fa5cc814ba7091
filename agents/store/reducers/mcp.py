"""MCP tool pins. The first listing of a server pins its tools as listed (trust on first
use, said so); afterwards a tool whose description or schema changed, or one new since, is
recorded but not pinned: agents are not offered it until the person approves."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from agents.errors import InvalidArgument, NotFound, PermissionDenied
from agents.protocol import McpTool, McpToolListed, McpToolsChanged
from agents.store import rows
from agents.store.tx import Tx

MAX_TOOLS = 1_000  # per server listing: a server that lists more is refused, not truncated
MAX_TEXT = 64_000  # of one description or schema, stored whole (shown whole to the person)


def tool_hash(name: str, description: str, input_schema: str) -> str:
    canonical = json.dumps([name, description, json.loads(input_schema)], sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_mcp_listing(tx: Tx, actor: str, server: str, tools: Sequence[McpToolListed]) -> list[McpTool]:
    """Record what `server` lists now; returns the tools withheld (new or changed)."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not record MCP listings")
    if len(tools) > MAX_TOOLS:
        raise InvalidArgument(f"mcp server {server} lists {len(tools)} tools (at most {MAX_TOOLS})")
    first = tx.one("SELECT COUNT(*) FROM mcp_tools WHERE server = ?", (server,))[0] == 0
    seen = set()
    for tool in tools:
        if len(tool.description) > MAX_TEXT or len(tool.input_schema) > MAX_TEXT:
            raise InvalidArgument(f"mcp server {server}: tool {tool.name[:80]!r} has a description or schema "
                                  f"over {MAX_TEXT} characters")
        seen.add(tool.name)
        digest = tool_hash(tool.name, tool.description, tool.input_schema)
        old = tx.one("SELECT schema_hash, listed FROM mcp_tools WHERE server = ? AND name = ?",
                     (server, tool.name))
        if old is None:
            pin = (tool.description, tool.input_schema, digest, tx.now) if first else (None, None, None, None)
            tx.execute(
                "INSERT INTO mcp_tools (server, name, description, input_schema, schema_hash, "
                "pinned_description, pinned_schema, pinned_hash, listed, first_seen, changed_at, "
                "approved_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                (server, tool.name, tool.description, tool.input_schema, digest, *pin[:3], tx.now, tx.now,
                 pin[3]))
        elif old[0] != digest or not old[1]:
            tx.execute("UPDATE mcp_tools SET description = ?, input_schema = ?, schema_hash = ?, listed = 1, "
                       "changed_at = ? WHERE server = ? AND name = ?",
                       (tool.description, tool.input_schema, digest, tx.now, server, tool.name))
    listed = tx.execute("SELECT name FROM mcp_tools WHERE server = ? AND listed = 1", (server,)).fetchall()
    for (name,) in listed:
        if name not in seen:
            tx.execute("UPDATE mcp_tools SET listed = 0, changed_at = ? WHERE server = ? AND name = ?",
                       (tx.now, server, name))
    withheld = [t for t in _tools(tx, server) if t.listed and not t.offered]
    if withheld:
        tx.emit(actor, McpToolsChanged(server=server, tools=[t.name for t in withheld]),
                subject=f"mcp:{server}")
    return withheld


def approve_mcp(tx: Tx, actor: str, server: str, names: Sequence[str] = ()) -> list[McpTool]:
    """The person approves the server's tools as now listed (all withheld ones, or `names`)."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not approve MCP tools; the person at the keyboard does")
    tools = _tools(tx, server)
    if not tools:
        raise NotFound(f"mcp server {server!r} has listed no tools yet")
    waiting = [t for t in tools if t.listed and not t.offered]
    unknown = [n for n in names if n not in {t.name for t in tools}]
    if unknown:
        raise NotFound(f"mcp server {server!r} lists no tool {unknown[0]!r}")
    chosen = [t for t in waiting if not names or t.name in names]
    for t in chosen:
        tx.execute("UPDATE mcp_tools SET pinned_description = description, pinned_schema = input_schema, "
                   "pinned_hash = schema_hash, approved_at = ? WHERE server = ? AND name = ?",
                   (tx.now, server, t.name))
    if chosen:
        tx.emit(actor, McpToolsChanged(server=server, tools=[t.name for t in chosen], approved=True),
                subject=f"mcp:{server}")
    return [t for t in _tools(tx, server) if t.name in {c.name for c in chosen}]


def _tools(tx: Tx, server: str) -> list[McpTool]:
    return [rows.mcp_tool(r) for r in tx.execute(
        "SELECT * FROM mcp_tools WHERE server = ? ORDER BY name", (server,)).fetchall()]
