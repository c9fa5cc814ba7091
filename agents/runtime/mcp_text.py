"""What a person reads before approving MCP tools that changed since pinned (or are new):
the change whole, terminal-safe; the CLI (`agentdeck mcp approve`) and the cockpit's
review show the same lines. Pure: no terminal, no Textual."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable

from agents.protocol import McpTool
from agents.safe_text import safe_text


def change_lines(tool: McpTool) -> list[str]:
    """What changed since the approved version, whole (a person must see all of it)."""
    if tool.pinned_hash is None:
        out = [f"new tool mcp.{tool.server}.{tool.name}", "description:", *tool.description.splitlines(),
               "input schema:", json.dumps(json.loads(tool.input_schema), indent=2, sort_keys=True)]
        return [safe_text(x) for x in out]
    out = [f"changed tool mcp.{tool.server}.{tool.name}"]
    for label, old, new in (("description", tool.pinned_description or "", tool.description),
                            ("input schema", _pretty(tool.pinned_schema), _pretty(tool.input_schema))):
        if old != new:
            out += [f"{label}:"] + [d.rstrip("\n") for d in difflib.unified_diff(
                old.splitlines(), new.splitlines(), "approved", "now", lineterm="")]
    return [safe_text(x) for x in out]


def _pretty(schema: str | None) -> str:
    return json.dumps(json.loads(schema), indent=2, sort_keys=True) if schema else ""


def withheld_by_server(tools: Iterable[McpTool], servers: Iterable[str]) -> dict[str, list[McpTool]]:
    """The tools of `servers` (the configured ones) listed but not offered: new or changed
    since pinned, waiting for a person; servers with none are left out."""
    wanted = set(servers)
    out: dict[str, list[McpTool]] = {}
    for tool in tools:
        if tool.server in wanted and tool.listed and not tool.offered:
            out.setdefault(tool.server, []).append(tool)
    return out


def withheld_summary(withheld: dict[str, list[McpTool]]) -> str:
    """`MCP fs: 2 tool(s) withheld` (each server), for a badge or a notification."""
    return "; ".join(f"MCP {safe_text(server)}: {len(tools)} tool(s) withheld"
                     for server, tools in withheld.items())
