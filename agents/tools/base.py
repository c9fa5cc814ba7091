"""What a tool is, what it gets, what it returns.

A tool has a name, a one-line description for the model, its arguments as a msgspec
Struct (strict: unknown or missing fields are an error result, never an exception; the
Struct also gives the JSON schema the crew's grammar uses), an effect class, a timeout
and an output cap. `invoke` runs one call and never raises into its caller.

A tool runs with a ToolContext bound by the runtime: the agent it acts for (the only
actor it can write as — no tool takes an actor argument), the workspace, a store handle
whose writes use that actor, and the tool environment.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import msgspec
import msgspec.inspect

from agents.errors import AgentdeckError

log = logging.getLogger(__name__)

Effect = Literal["read", "write", "exec", "message", "meta"]
ResultStatus = Literal["ok", "error", "timeout", "denied"]
P = ParamSpec("P")
T = TypeVar("T")

MODEL_CAP = 8_000  # characters of output given back to the model
STORED_CAP = 200_000  # characters kept with the tool_calls row
MAX_ID = 2**63 - 1  # SQLite's largest integer
# Every number a tool takes has bounds (msgspec.Meta ge/le): checked when the call is
# parsed, so a huge number is a bad argument and never an overflow later, and part of the
# JSON schema the grammar is built from.


class ToolError(Exception):
    """A tool's own failure, told to the model as an error result (one line)."""


class ToolResult(msgspec.Struct, kw_only=True):
    status: ResultStatus
    text: str
    truncated: bool = False


class AgentStore:
    """The store as one agent sees it: every write is made as that agent."""

    def __init__(self, store: Any, agent: str) -> None:
        self._store = store  # an AsyncStore
        self.agent = agent

    async def write(self, reducer: Callable[Concatenate[Any, str, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        return await self._store.write(reducer, self.agent, *args, **kwargs)

    async def read(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._store.read(query, *args, **kwargs)


@dataclass(frozen=True)
class SandboxSettings:
    mode: str  # "auto", "bwrap" or "off"
    bwrap: str | None  # path of the bwrap binary, when found and working
    network: bool = False  # may this agent's commands reach the network
    hide: tuple[str, ...] = ()  # real paths under an empty tmpfs (homes, configured paths)
    show: tuple[str, ...] = ()  # real paths inside those, bound back read-only


@dataclass
class ToolContext:
    agent: str
    workspace: Path  # real path
    home: Path  # agentdeck's home: hidden from tools
    store: AgentStore
    env: Mapping[str, str] = field(default_factory=dict)  # configured tool_env, resolved
    sandbox: SandboxSettings = SandboxSettings(mode="auto", bwrap=None)
    task_id: int | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[msgspec.Struct]
    effect: Effect
    run: Callable[[ToolContext, Any], Awaitable[str]]
    timeout_s: float = 30.0
    output_cap: int = MODEL_CAP

    def schema(self) -> dict[str, Any]:
        return msgspec.json.schema(self.args)

    def parse(self, arguments: object) -> msgspec.Struct:
        """Strict: raises ToolError naming the problem."""
        if not isinstance(arguments, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object")
        try:
            return msgspec.convert(arguments, self.args, strict=True)
        except msgspec.ValidationError as err:
            raise ToolError(f"{self.name}: bad arguments: {err}{self._range(str(err))}") from None

    def _range(self, error: str) -> str:
        """`; limit must be 1..200` when the error is about a bounded field."""
        at = re.search(r"at `\$\.([A-Za-z_]\w*)`$", error)
        if at is None:
            return ""
        for f in msgspec.inspect.type_info(self.args).fields:  # type: ignore[attr-defined]
            kinds = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
            for kind in kinds:
                if f.encode_name == at.group(1) and isinstance(kind, (msgspec.inspect.IntType,
                                                                      msgspec.inspect.FloatType)):
                    if kind.ge is not None and kind.le is not None:
                        low, high = (f"{b:g}" if isinstance(b, float) else str(b) for b in (kind.ge, kind.le))
                        return f"; {f.encode_name} must be {low}..{high}"
        return ""


def cap_middle(text: str, limit: int) -> tuple[str, bool]:
    """At most about `limit` characters: head and tail kept, the middle marked."""
    if len(text) <= limit:
        return text, False
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted} characters omitted …]\n{text[-tail:]}", True


async def invoke(tool: Tool, ctx: ToolContext, arguments: object, *,
                 redact: Callable[[str], str] = lambda text: text) -> tuple[ToolResult, str]:
    """Run one call. Returns (result for the model, text to store), both with every
    secret value redacted; never raises (cancellation of the caller aside)."""
    try:
        args = tool.parse(arguments)
    except ToolError as err:
        return ToolResult(status="error", text=redact(str(err))), redact(str(err))
    timeout_s = getattr(args, "timeout_s", None)
    limit = timeout_s or tool.timeout_s
    try:
        # The tool enforces its own timeout (run_shell kills its process group); this
        # is the backstop for one that does not return.
        text = await asyncio.wait_for(tool.run(ctx, args), limit + 5)
    except TimeoutError:
        text, status = f"{tool.name}: timed out after {limit:g} s", "timeout"
    except ToolTimeout as err:
        text, status = str(err), "timeout"
    except (ToolError, AgentdeckError) as err:
        text, status = str(err), "error"
    except (OSError, sqlite3.Error, UnicodeError, ValueError) as err:
        text, status = f"{tool.name}: {type(err).__name__}: {err}", "error"
    except Exception as err:  # a bug in a tool is an error result, logged, never a crash
        log.exception("tool %s failed", tool.name)
        text, status = f"{tool.name}: internal error: {type(err).__name__}: {err}", "error"
    else:
        status = "ok"
    text = redact(text)
    stored, _ = cap_middle(text, STORED_CAP)
    shown, truncated = cap_middle(text, tool.output_cap)
    return ToolResult(status=status, text=shown, truncated=truncated), stored  # type: ignore[arg-type]


class ToolTimeout(ToolError):
    """The tool hit its own time limit (and cleaned up after itself)."""
