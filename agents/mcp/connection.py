"""One MCP server: started (a stdio command inside bubblewrap, or a streamable HTTP url),
its tools listed, its tools called, stopped.

Nothing waits unbounded: starting has start_timeout_s, a call call_timeout_s, stopping a
fixed grace. A server that dies is restarted in the background with backoff (0.5 s,
doubling, capped); consecutive failures (crashes, timeouts, failed starts) open a breaker
for breaker_open_s, during which calls are refused at once, saying so. Cancelling the
caller cancels the call (the SDK tells the server).

The SDK's client holds anyio task groups that must be left from the task that entered
them, so each session lives in a runner task of its own; calls come from any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, CallToolResult, ListToolsResult

from agents.config.schema import McpServerConfig
from agents.errors import AgentdeckError
from agents.protocol import McpToolListed
from agents.safe_text import safe_text
from agents.secrets import resolve as resolve_secret
from agents.tools.base import SandboxSettings
from agents.tools.shell import PATH, bwrap_argv, sandbox_settings

log = logging.getLogger(__name__)

State = Literal["up", "down", "breaker_open", "disabled", "stopped"]
EnvResolver = Callable[[str, str], str]  # (value, where it is configured) -> the value to use

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STOP_GRACE_S = 8.0  # the SDK's own shutdown: close stdin 2 s, SIGTERM 2 s, SIGKILL 2 s
MAX_PAGES = 20  # of a tools listing: a server that paginates forever cannot hang a start
MAX_RESULT_CHARS = 1_000_000  # kept of one result before the tool's own cap
STDERR_TAIL = 2048  # bytes of the server's stderr kept, for a failed start's reason
REASON_CAP = 300
BWRAP_MISSING = ("bubblewrap is missing: stdio MCP servers run only sandboxed; "
                 'sandbox = "off" to run unsandboxed')
_SANDBOX_HOME = "/tmp"  # inside bubblewrap /tmp is the server's own, empty tmpfs


class McpUnavailable(AgentdeckError):
    """The server cannot take the call: it is down, failed during it, or its breaker is open."""


class McpCallTimeout(McpUnavailable):
    """The call ran past call_timeout_s (and was cancelled)."""


class CallOutcome(msgspec.Struct, frozen=True):
    text: str
    is_error: bool


def one_line(text: object, cap: int = REASON_CAP) -> str:
    line = safe_text(" ".join(str(text).split()))
    return line if len(line) <= cap else line[: cap - 1] + "…"


class _StderrTail:
    """The server's stderr, drained so it never blocks on a full pipe; the last bytes kept."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.writer = open(write_fd, "w", encoding="utf-8", errors="replace")  # given to the child
        self._read_fd = read_fd
        self._tail = bytearray()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(self._read_fd, "rb", 0))
        try:
            while chunk := await reader.read(65536):
                self._tail += chunk
                del self._tail[:-STDERR_TAIL]
        finally:
            transport.close()

    def close_writer(self) -> None:
        """Our copy of the write end: once the child has its own, it goes (EOF at its exit)."""
        with contextlib.suppress(OSError):
            self.writer.close()

    def last_line(self) -> str:
        lines = [s for s in self._tail.decode("utf-8", "replace").splitlines() if s.strip()]
        return lines[-1] if lines else ""

    async def close(self) -> None:
        self.close_writer()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await asyncio.wait_for(self._task, 1.0)
        else:
            with contextlib.suppress(OSError):
                os.close(self._read_fd)


class _Session:
    """One live client session: entered and left by its own runner task."""

    def __init__(self, client: Client, stderr: _StderrTail | None) -> None:
        self.client = client
        self.stderr = stderr
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())
        await asyncio.shield(self._ready)

    async def _run(self) -> None:
        try:
            async with self.client:
                if self.stderr is not None:
                    self.stderr.close_writer()
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as err:
            if not self._ready.done():
                if isinstance(err, Exception):
                    self._ready.set_exception(err)
                    self._ready.exception()  # retrieved: open() may have stopped waiting
                else:
                    self._ready.cancel()
            if not isinstance(err, Exception):
                raise
            log.debug("mcp session ended: %s", type(err).__name__)

    @property
    def alive(self) -> bool:
        return self._runner is not None and not self._runner.done() and not self._stop.is_set()

    async def close(self) -> None:
        """Bounded: the runner leaves the client (the SDK stops the server); if that hangs,
        it is cancelled."""
        self._stop.set()
        runner = self._runner
        if runner is not None:
            if not self._ready.done():
                runner.cancel()  # still starting: nothing to wait for; the SDK cleans up
            done, _ = await asyncio.wait({runner}, timeout=STOP_GRACE_S)
            if not done:
                runner.cancel()
                await asyncio.wait({runner}, timeout=STOP_GRACE_S)
                if not runner.done():
                    log.warning("an MCP session did not stop within %g s", 2 * STOP_GRACE_S)
            if runner.done() and not runner.cancelled():
                runner.exception()  # retrieved: logged at debug level by _run already
        if self.stderr is not None:
            await self.stderr.close()


def server_paths(cfg: McpServerConfig) -> list[str]:
    """What a stdio server itself needs to see, read-only, where the sandbox hides it (a
    home, /tmp): its program (a virtualenv's whole root, for `.venv/bin/python`; the
    installation a link points into) and the directories of files named in its args."""
    found: list[str] = []
    program = shutil.which(cfg.command) or cfg.command
    if os.path.isabs(program) and os.path.exists(program):
        where = Path(program)
        found.append(str(where.parent.parent if where.parent.name == "bin" else where.parent))
        real = Path(os.path.realpath(program))
        found.append(str(real.parent.parent if real.parent.name == "bin" else real.parent))
    for arg in cfg.args:
        if os.path.isabs(arg) and os.path.isfile(arg):
            found.append(str(Path(arg).parent))
    return [p for p in dict.fromkeys(found) if p != "/"]


class McpConnection:
    """One configured MCP server."""

    def __init__(self, name: str, server_config: McpServerConfig, *, workspace: Path, home: Path,
                 env_resolver: EnvResolver = resolve_secret, sandbox: SandboxSettings | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = server_config
        self.workspace = Path(workspace)
        self.home = Path(home)
        self.transport = "stdio" if server_config.command else "http"
        self._resolve = env_resolver
        self._sandbox = sandbox if sandbox is not None else sandbox_settings("auto")
        self._now = now
        self.state: State = "down" if server_config.enabled else "disabled"
        self.reason = "" if server_config.enabled else "disabled in the config"
        self.tools: list[McpToolListed] = []
        self._session: _Session | None = None
        self._connecting: asyncio.Task[_Session] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._failures = 0
        self._open_until = 0.0
        self._backoff = BACKOFF_FIRST_S
        self._stopped = False
        self._secrets: list[str] = []  # resolved secret values: kept out of every reason
        self._private_home: str | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # A listing after a restart goes to the hub before any call runs (a server may come
        # back with a changed tool: a rug pull); it answers which tools are withheld now.
        self.on_relisted: Callable[[list[McpToolListed]], Awaitable[set[str]]] | None = None
        self.withheld: set[str] = set()
        self._listed_once = False

    # -- starting and stopping -------------------------------------------------------------

    async def start(self) -> list[McpToolListed]:
        """Start the server and list its tools; raises McpUnavailable with the reason."""
        self._stopped = False
        await self._connected()
        return self.tools

    async def stop(self) -> None:
        """Stop the server (bounded; safe to call twice, and while it is starting)."""
        self._stopped = True
        for task in (self._restart, self._connecting):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=2 * STOP_GRACE_S)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=2 * STOP_GRACE_S)
        if self._private_home is not None:
            shutil.rmtree(self._private_home, ignore_errors=True)
            self._private_home = None
        if self.state != "disabled":
            self.state, self.reason = "stopped", "stopped"

    async def list_tools(self) -> list[McpToolListed]:
        """List again (a refresh): a changed listing is the hub's to record."""
        session = await self._connected()
        try:
            async with asyncio.timeout(self.config.start_timeout_s):
                self.tools = await self._listing(session.client)
        except TimeoutError:
            raise McpUnavailable(f"mcp server {self.name}: listing its tools took over "
                                 f"{self.config.start_timeout_s:g} s") from None
        except Exception as err:
            reason = self._lost(session, f"listing its tools failed: {self._clean(err)}")
            raise McpUnavailable(reason) from None
        return self.tools

    async def _connected(self) -> _Session:
        """The live session: this one, one being restarted or started, or a new one
        (shared by concurrent callers)."""
        if self._session is not None and self._session.alive:
            return self._session
        if self._stopped:
            raise McpUnavailable(f"mcp server {self.name} is stopped")
        if not self.config.enabled:
            raise McpUnavailable(f"mcp server {self.name} is disabled in the config")
        if self._restart is not None and not self._restart.done():
            await asyncio.shield(self._restart)  # its backoff holds for callers too
            if self._session is not None and self._session.alive:
                return self._session
            raise McpUnavailable(self.reason or f"mcp server {self.name} is down")
        return await self._connect_shared()

    async def _connect_shared(self) -> _Session:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Session:
        try:
            client, stderr = self._client()
        except McpUnavailable as err:
            self._fail(str(err))
            raise
        session = _Session(client, stderr)
        if stderr is not None:
            stderr.start()
        try:
            async with asyncio.timeout(self.config.start_timeout_s):
                await session.open()
                tools = await self._listing(client)
        except BaseException as err:
            await session.close()
            if isinstance(err, asyncio.CancelledError):
                raise
            said = f"; it said: {one_line(stderr.last_line(), 160)}" if stderr and stderr.last_line() else ""
            if isinstance(err, TimeoutError):
                why = f"did not start within {self.config.start_timeout_s:g} s"
            else:
                why = f"could not start: {self._clean(err)}"
            reason = f"mcp server {self.name} {why}{self._clean(said)}"
            self._fail(reason)
            raise McpUnavailable(reason) from None
        if self._listed_once and self.on_relisted is not None:
            self.withheld = await self.on_relisted(tools)
        self._listed_once = True
        self._session, self.tools = session, tools
        self.state, self.reason = "up", ""
        self._backoff = BACKOFF_FIRST_S
        return session

    async def _listing(self, client: Client) -> list[McpToolListed]:
        found: list[McpToolListed] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page: ListToolsResult = await client.list_tools(cursor=cursor)
            found += [McpToolListed(name=t.name, description=t.description or "",
                                    input_schema=json.dumps(t.input_schema, sort_keys=True))
                      for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    def _client(self) -> tuple[Client, _StderrTail | None]:
        cfg = self.config
        self._secrets = []
        if cfg.url:
            headers = {k: self._value(v, f"mcp.{self.name}.headers.{k}") for k, v in cfg.headers.items()}
            return Client(_http_transport(cfg.url, headers), mode="auto", cache=None), None
        env = {k: self._value(v, f"mcp.{self.name}.env.{k}") for k, v in cfg.env.items()}
        argv = [cfg.command, *cfg.args]
        if self._sandbox.mode == "off":
            if self._private_home is None:
                self._private_home = tempfile.mkdtemp(prefix=f"agentdeck-mcp-{self.name}-")
            home = self._private_home
        else:
            if self._sandbox.bwrap is None:
                raise McpUnavailable(f"mcp server {self.name}: {BWRAP_MISSING}")
            sandbox = bwrap_argv(self._sandbox.bwrap, self.workspace, self.home, cfg.network,
                                 self._sandbox.hide, [*self._sandbox.show, *server_paths(cfg)],
                                 workspace_writable=cfg.workspace_write)
            # What the SDK passes through from our own environment, taken out again.
            unset = [a for var in ("USER", "LOGNAME") for a in ("--unsetenv", var)]
            argv = [*sandbox[:-1], *unset, "--", *argv]
            home = _SANDBOX_HOME
        base = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": home, "TERM": "dumb", "SHELL": "/bin/sh"}
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=base | env, cwd=self.workspace)
        stderr = _StderrTail()
        return Client(stdio_client(params, errlog=stderr.writer), mode="auto", cache=None), stderr

    def _value(self, value: str, where: str) -> str:
        try:
            resolved = self._resolve(value, where)
        except AgentdeckError as err:
            raise McpUnavailable(f"mcp server {self.name}: {one_line(err)}") from None
        if resolved != value and len(resolved) >= 4:
            self._secrets.append(resolved)
        return resolved

    # -- calls ---------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallOutcome:
        """One call; raises McpUnavailable (McpCallTimeout) naming the server."""
        self._refuse_if_open()
        limit = self.config.call_timeout_s
        session: _Session | None = None
        try:
            async with asyncio.timeout(limit):
                session = await self._connected()
                if tool in self.withheld:  # changed while it was restarted: not this call
                    raise McpUnavailable(f"mcp server {self.name}: {tool} changed since it was approved "
                                         f"(seen when the server restarted); withheld until "
                                         f"`agentdeck mcp approve {self.name}`")
                result: CallToolResult = await session.client.call_tool(tool, arguments)
        except TimeoutError:
            reason = f"mcp server {self.name}: {tool} timed out after {limit:g} s (cancelled)"
            self._fail(reason)
            raise McpCallTimeout(reason) from None
        except McpUnavailable:
            raise
        except MCPError as err:
            if err.code != CONNECTION_CLOSED and session is not None and session.alive:
                self._succeeded()  # the server answered, with an error of its own
                return CallOutcome(text=f"mcp server {self.name}: {self._clean(err)}", is_error=True)
            reason = self._lost(session, f"failed during the call ({self._clean(err)})")
            raise McpUnavailable(reason) from None
        except Exception as err:  # a broken transport, a malformed answer
            reason = self._lost(session, f"failed during the call ({self._clean(err)})")
            raise McpUnavailable(reason) from None
        self._succeeded()
        return CallOutcome(text=self._clean_text(result_text(result)), is_error=bool(result.is_error))

    def breaker_left(self) -> float:
        """Seconds its breaker stays open (0 when closed)."""
        return max(self._open_until - self._now(), 0.0)

    def _refuse_if_open(self) -> None:
        left = self._open_until - self._now()
        if left > 0:
            raise McpUnavailable(f"mcp server {self.name}: breaker open after {self.config.breaker_failures} "
                                 f"consecutive failures (last: {self.reason}); calls refused for another "
                                 f"{left:.0f} s")
        if self.state == "breaker_open":
            self.state = "down"  # half-open: the next call tries again

    def _succeeded(self) -> None:
        self._failures = 0
        if self._session is not None and self._session.alive:
            self.state, self.reason = "up", ""

    def _fail(self, reason: str) -> None:
        self._failures += 1
        self.reason = reason
        if self._failures >= self.config.breaker_failures:
            self._open_until = self._now() + self.config.breaker_open_s
            self._failures = 0
            self.state = "breaker_open"
            log.warning("%s; breaker open for %g s", reason, self.config.breaker_open_s)
        else:
            if self.state != "up" or self._session is None or not self._session.alive:
                self.state = "down"
            log.warning("%s", reason)

    def _lost(self, session: _Session | None, what: str) -> str:
        """The server died or its transport broke: it is restarted in the background."""
        reason = f"mcp server {self.name} {what}; restarting it"
        if session is not None and session is self._session:
            self._session = None
            closing = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(closing)  # held: a task nobody references may be collected
            closing.add_done_callback(self._closing.discard)
        self.state = "down"
        self._fail(reason)
        self._schedule_restart()
        return reason

    def _schedule_restart(self) -> None:
        if self._stopped or (self._restart is not None and not self._restart.done()):
            return
        self._restart = asyncio.get_running_loop().create_task(self._restart_loop())

    async def _restart_loop(self) -> None:
        while not self._stopped and self.state != "breaker_open":
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
            if self._session is not None and self._session.alive:
                return
            try:
                await self._connect_shared()
            except McpUnavailable:
                continue
            log.info("mcp server %s restarted", self.name)
            return

    # -- text ----------------------------------------------------------------------------

    def _clean(self, text: object) -> str:
        """One line, with every secret value this server was given taken out."""
        return one_line(self._clean_text(str(text)))

    def _clean_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[secret]")
        return text


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """Streamable HTTP with the configured headers (an http client of our own: the SDK
    closes only one it made itself)."""
    import httpx2  # the SDK's HTTP client: only an http server needs it

    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http, \
            streamable_http_client(url, http_client=http) as streams:
        yield streams


def result_text(result: CallToolResult) -> str:
    """Text parts joined; every other part described in one line."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "?")
        if kind == "text":
            parts.append(block.text)  # type: ignore[union-attr]
        elif kind in ("image", "audio"):
            size = len(getattr(block, "data", "")) * 3 // 4
            mime = one_line(getattr(block, "mime_type", ""), 60)
            parts.append(f"[{kind} {mime}, about {size} bytes, not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource link {one_line(getattr(block, 'uri', ''), 200)}]")
        elif kind == "resource":
            resource = block.resource  # type: ignore[union-attr]
            text = getattr(resource, "text", None)
            if isinstance(text, str):
                parts.append(f"[resource {one_line(resource.uri, 200)}]\n{text}")
            else:
                parts.append(f"[resource {one_line(resource.uri, 200)}: binary, not shown]")
        else:
            parts.append(f"[{one_line(kind, 40)} content, not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[… {len(text) - MAX_RESULT_CHARS} characters cut …]"
    return text
