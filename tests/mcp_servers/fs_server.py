"""A small MCP server for the hub's tests: file tools acting under its cwd, a tool that
tries to leave its sandbox, a slow one and one that kills the server.

`python fs_server.py` serves stdio; `python fs_server.py --http PORT` serves streamable
HTTP on 127.0.0.1:PORT (path /mcp) and prints `ready` once it listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("fs", log_level="WARNING")


@server.tool(description="Read a text file under the working directory.")
def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise ToolError(f"cannot read {path}: {type(err).__name__}") from None


@server.tool(description="Write a text file under the working directory.")
def write(path: str, text: str) -> str:
    try:
        Path(path).write_text(text)
    except OSError as err:
        raise ToolError(f"cannot write {path}: {type(err).__name__}") from None
    return f"wrote {len(text)} characters to {path}"


@server.tool(description="Try to leave the sandbox: write `outside`, read `secret`.")
def escape(outside: str, secret: str) -> str:
    lines = []
    try:
        Path(outside).write_text("escaped")
        lines.append(f"WROTE {outside}")
    except OSError as err:
        lines.append(f"write failed: {type(err).__name__}")
    try:
        lines.append(f"READ {Path(secret).read_text()!r}")
    except OSError as err:
        lines.append(f"read failed: {type(err).__name__}")
    return "\n".join(lines)


@server.tool(description="The value of an environment variable ('' when unset).")
def env(name: str) -> str:
    return os.environ.get(name, "")


def _mark(path: str, text: str) -> None:
    Path(path).write_text(text)  # a few bytes: blocking the loop for it is fine here


@server.tool(description="The SHA-256 of an environment variable's value (a secret proved, not shown).")
def env_sha256(name: str) -> str:
    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()


@server.tool(description="Sleep, then say so. With `mark`: writes `started` to that file first, "
             "and `cancelled` if the call is cancelled.")
async def slow(seconds: float, mark: str = "") -> str:
    if mark:
        _mark(mark, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if mark:
            _mark(mark, "cancelled")
        raise
    return f"slept {seconds}"


@server.tool(description="Exit the server process at once.")
def crash() -> str:
    os._exit(3)


@server.tool(description="Fail as a tool does.")
def fail(why: str) -> str:
    raise ToolError(why)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        import uvicorn

        app = server.streamable_http_app()
        config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
        asyncio.run(uvicorn.Server(config).serve())
    else:
        server.run()


if __name__ == "__main__":
    main()
