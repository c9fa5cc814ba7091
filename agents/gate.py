"""The gate every tool call passes: decide, ask the person when needed, run, record.

1. `decide()` says allow, ask or deny, and what the call resolves to: once per call, and
   that one decision is carried through the intent row, the approval and the run.
2. The intent is written (a `running` tool_calls row) before anything runs.
3. deny: the call ends `denied`. ask: an approval row shows the agent, the exact
   arguments, the resolved path or command, the agent's stated reason and the rule an
   `always` would save; the call waits (without blocking anything else) until the person
   answers once / session / always / deny, or the approval expires (denied, `timeout`).
   Before anyone is asked, the `tool.before` hooks judge the call (agents/hooks): one that
   denies, or fails, ends it `denied` with its reason, and no approval is created.
   The wait follows the approval's `approval.decided` event on the bus; the row stays
   the source of truth and is read when that event comes (and once before waiting).
4. The tool runs with a context bound to the agent; its output, with every secret value
   redacted, is capped for the model and stored (with a larger cap) on the row; the
   `tool.after` hooks get it in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agents.bus import Bus
from agents.checkpoints.git import GitError
from agents.checkpoints.preview import PREVIEW_TOOLS, write_preview
from agents.checkpoints.recorder import WRITING_TOOLS, Before, Checkpointer
from agents.checkpoints.worktrees import Worktrees, is_repository
from agents.config import Config
from agents.errors import InvalidTransition
from agents.hooks import HookEvent, Hooks
from agents.hooks.run import RESULT_CHARS
from agents.policy.decide import Decision, Policy, decide
from agents.policy.rules import Rule
from agents.protocol import SYSTEM, Approval, PermissionRule
from agents.redact import Redactor, redactor_for
from agents.safe_text import shorten
from agents.store import AsyncStore, EventFilter, queries
from agents.store import reducers as r
from agents.tools import TOOLS, ToolResult, invoke
from agents.tools.base import MAX_ID, AgentStore, Tool, ToolContext
from agents.tools.shell import find_bwrap, sandbox_settings

REASON_CHARS = 200  # of the model's reason on an approval: a line a person reads

AskHandler = Callable[[Approval], Awaitable[None]]


class McpTools(Protocol):
    """What the gate needs of the MCP hub (agents/mcp/hub.py): each agent's offered tools."""

    def tools_for(self, agent: str) -> list[Tool]: ...

WaitingHandler = Callable[[], Awaitable[None]]


@dataclass
class GateOutcome:
    result: ToolResult
    decision: Decision
    call_id: int
    approval: Approval | None = None  # the approval asked for, as it was decided


def recordable(value: Any) -> Any:
    """Arguments as the intent row can hold them, before they are validated: an integer
    past 64 bits (`limit: 10**30`, refused by the tool's schema) is kept as its digits,
    nan and inf (not JSON) as words."""
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_ID - 1 <= value <= MAX_ID:
        digits = str(value)
        return digits if len(digits) <= 40 else f"<an integer of {len(digits)} digits>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): recordable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [recordable(v) for v in value]
    return value


def config_rules(config: Config) -> list[Rule]:
    return [Rule(id=None, agent=c.agent, tool=c.tool, pattern=c.pattern, decision=c.decision,
                 source="config") for c in config.rules]


def stored_rules(found: list[PermissionRule]) -> list[Rule]:
    return [Rule(id=p.id, agent=p.agent, tool=p.tool, pattern=p.pattern, decision=p.decision,
                 source=p.source) for p in found]


def make_policy(config: Config, home: Path, rules: list[Rule], workspace: Path | None = None,
                extra_tools: Mapping[str, Mapping[str, Tool]] | None = None) -> Policy:
    """The policy as configured now: rules from the config and the database. `workspace`:
    where this call works (a task's worktree), if not the configured workspace;
    `extra_tools`: each agent's MCP tools offered now."""
    return Policy(
        extra_tools=extra_tools or {},
        workspace=workspace or config.workspace_path(), home=home,
        allowlists={name: list(a.tools) for name, a in config.enabled_agents().items()},
        rules=tuple(rules),
        shell_sandboxed=config.sandbox == "off" or find_bwrap() is not None,
        bwrap=config.sandbox != "off" and find_bwrap() is not None,
    )


class Gate:
    def __init__(self, store: AsyncStore, config: Config, home: Path,
                 redactor: Redactor | None = None, *, bus: Bus | None = None) -> None:
        self.store = store
        self.bus = bus  # the host's; without one, a wait for an approval starts its own
        self.config = config
        self.home = home
        self.redact = redactor or redactor_for(home, config)
        # (agent, tool, resolved) approved for the rest of this instance's life.
        self.session_grants: set[tuple[str, str, str]] = set()
        self.checkpoints = Checkpointer(home, config.checkpoints) if config.checkpoints.enabled else None
        self.worktrees = Worktrees(home, config.workspace_path(), config.checkpoints.worktree_keep_days)
        self.mcp: McpTools | None = None  # the host's MCP servers, when it runs any
        self.hooks = Hooks(config, home)  # [[hooks]] for tool.before and tool.after

    def mcp_tools(self, agent: str) -> dict[str, Tool]:
        """The MCP tools offered to `agent` now (scoped to it, pinned, expressible)."""
        if self.mcp is None:
            return {}
        return {t.name: t for t in self.mcp.tools_for(agent)}

    def tool_for(self, agent: str, name: str) -> Tool | None:
        return TOOLS.get(name) or self.mcp_tools(agent).get(name)

    def isolated(self, agent: str, task_id: int | None) -> bool:
        """Does this agent's task work in a worktree of its own?"""
        settings = self.config.agents.get(agent)
        return (task_id is not None and settings is not None and settings.isolation == "worktree"
                and is_repository(self.config.workspace_path()))

    def workspace_for(self, agent: str, task_id: int | None) -> Path:
        """Where this agent's task works: its worktree, or the workspace."""
        if task_id is not None and self.isolated(agent, task_id):
            return self.worktrees.path_for(task_id)
        return self.config.workspace_path()

    async def prepare(self, agent: str, task_id: int | None) -> Path:
        """The task's workspace, its worktree made on first use."""
        if task_id is not None and self.isolated(agent, task_id):
            return await self.worktrees.ensure(task_id)
        return self.config.workspace_path()

    async def policy(self, workspace: Path | None = None) -> Policy:
        # Read every time: `agentdeck rules add` in another terminal applies at once.
        found = await self.store.read(queries.rules)
        extra = {agent: self.mcp_tools(agent) for agent in self.config.enabled_agents()} if self.mcp else None
        return make_policy(self.config, self.home, [*config_rules(self.config), *stored_rules(found)],
                           workspace, extra)

    async def call(self, agent: str, tool: str, arguments: Any, *, reason: str = "",
                   task_id: int | None = None, on_ask: AskHandler | None = None,
                   on_waiting: WaitingHandler | None = None) -> GateOutcome:
        """Run one tool call through the gate. Raises InvalidArgument only for an unknown
        agent or tool; every other outcome is a result. `on_waiting` is awaited when the
        call is about to ask a person, before the question is written: whoever sees the
        question also sees the caller waiting."""
        workspace: Path | None = None
        unready = ""  # why the task's worktree could not be made: the call fails saying so
        try:
            workspace = await self.prepare(agent, task_id) if agent in self.config.agents else None
        except GitError as err:
            unready = f"error: the task's worktree could not be made: {err}"
        decision = decide(await self.policy(workspace), agent, tool, arguments)
        asks = decision.decision == "ask" and (agent, tool, decision.resolved) not in self.session_grants
        as_agent = AgentStore(self.store, agent)
        call = await as_agent.write(r.start_tool_call, tool, recordable(
            arguments if isinstance(arguments, dict) else {"arguments": arguments}), task_id=task_id)
        approval: Approval | None = None
        try:
            if unready:
                return await self._finish(call.id, agent, ToolResult(status="error", text=unready),
                                          decision, None)
            if decision.decision == "deny":
                by = f" ({decision.rule})" if decision.rule else ""
                return await self._finish(call.id, agent, ToolResult(status="denied", text=(
                    f"denied: {decision.reason}{by}")), decision, None)
            # Hooks: tool.before judges the call after the policy and before a person is
            # asked, so a hook's denial (or its failure: fail closed) never bothers anyone.
            hooked = await self.hooks.before(agent, tool, recordable(arguments), task_id=task_id,
                                             workspace=workspace or self.config.workspace_path())
            if hooked is not None:
                return await self._finish(call.id, agent, ToolResult(status="denied", text=hooked.message),
                                          decision, None)
            if asks:
                if on_waiting is not None:  # (after the hooks: a call they deny never waits)
                    await on_waiting()
                preview = None
                if tool in PREVIEW_TOOLS:  # what the write would change, from its arguments
                    preview = await asyncio.to_thread(write_preview, tool, arguments,
                                                      workspace or self.config.workspace_path(), self.home)
                approval = await as_agent.write(
                    r.request_approval, tool, arguments, decision.resolved, shorten(reason, REASON_CHARS),
                    timeout_s=self.config.approval_timeout_s, task_id=task_id, tool_call_id=call.id,
                    always_rule=decision.always_rule, ask_reason=decision.reason, preview=preview,
                )
                approval = await self._answer(approval, on_ask)
                if approval.status != "approved":
                    why = "expired unanswered (timeout)" if approval.status == "expired" else approval.status
                    return await self._finish(call.id, agent, ToolResult(
                        status="denied", text=f"not approved: {why}"), decision, approval)
                if approval.scope == "session":
                    self.session_grants.add((agent, tool, decision.resolved))
            context = self._context(agent, task_id, workspace)
            result, stored = await self._invoke_recorded(tool, context, arguments, as_agent, call.id)
            await as_agent.write(r.finish_tool_call, call.id, result.status, stored)
            # Hooks: tool.after, in the background (it never holds or changes the call).
            self.hooks.fire(HookEvent(event="tool.after", agent=agent, tool=tool,
                                      arguments=recordable(arguments), task_id=task_id,
                                      status=result.status, result=stored[:RESULT_CHARS]), workspace)
            return GateOutcome(result=result, decision=decision, call_id=call.id, approval=approval)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(as_agent, call.id, approval))
            raise

    async def _invoke_recorded(self, tool: str, context: ToolContext, arguments: Any, as_agent: AgentStore,
                               call_id: int) -> tuple[ToolResult, str]:
        """Run the tool; a writing one between two checkpoints of its workspace, so what
        it did to the files is recorded against the call (and its task) for undo."""
        found = self.tool_for(context.agent, tool)
        if found is None:  # withheld or gone between the decision and now
            gone = f"{tool} is no longer offered"
            return ToolResult(status="error", text=gone), gone
        before: Before | None = None
        if self.checkpoints is not None and (tool in WRITING_TOOLS or self._mcp_writes(tool)):
            before = await self.checkpoints.before(context.workspace)
        try:
            ran = await invoke(found, context, arguments, redact=self.redact)
        except asyncio.CancelledError:
            if before is not None and self.checkpoints is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.checkpoints.after(before, as_agent, call_id, cancelled=True))
            raise
        if before is not None and self.checkpoints is not None:
            await self.checkpoints.after(before, as_agent, call_id)
        return ran

    def _mcp_writes(self, tool: str) -> bool:
        """An MCP tool of a stdio server given the workspace to write: checkpointed too."""
        parts = tool.split(".", 2)
        server = self.config.mcp.get(parts[1]) if len(parts) == 3 and parts[0] == "mcp" else None
        return server is not None and bool(server.command) and server.workspace_write

    def _context(self, agent: str, task_id: int | None, workspace: Path | None = None) -> ToolContext:
        settings = self.config.agents[agent]
        return ToolContext(
            agent=agent, workspace=workspace or self.config.workspace_path(), home=self.home,
            store=AgentStore(self.store, agent), env=self.config.resolved_tool_env(agent),
            sandbox=sandbox_settings(self.config.sandbox, settings.network,
                                     hide_homes=self.config.sandbox_hide_homes,
                                     hide=self.config.sandbox_hide, show=self.config.sandbox_show),
            task_id=task_id,
        )

    async def _answer(self, approval: Approval, on_ask: AskHandler | None) -> Approval:
        """The approval once decided: by `on_ask` (a prompt here), or by anyone else."""
        asker = asyncio.create_task(on_ask(approval)) if on_ask else None
        try:
            return await self._wait(approval)
        finally:
            if asker is not None and not asker.done():
                asker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asker

    async def _wait(self, approval: Approval) -> Approval:
        """The row once it is no longer pending. The answer may come from this process,
        another terminal or a TUI; each is an `approval.decided` event. The subscription
        starts before the first read, so a decision made before it is in that read and one
        made after it is an event: none is missed. Expiry is this call's own deadline."""
        subject = f"approval:{approval.id}"
        async with self._bus() as bus:
            sub = await bus.subscribe(None, EventFilter(kinds=["approval.decided"], subject_prefix=subject),
                                      start="now")
            try:
                while True:
                    current = await self.store.read(queries.approval, approval.id)
                    assert current is not None
                    if current.status != "pending":
                        return current
                    left = current.expires_at - time.time()
                    if left <= 0:
                        await self.store.write(r.expire_approvals, SYSTEM)
                        continue
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            # The prefix also matches approval:12 for approval 1: skip those.
                            while (await sub.get()).subject != subject:
                                pass
            finally:
                await sub.close()

    @contextlib.asynccontextmanager
    async def _bus(self) -> AsyncIterator[Bus]:
        """The host's bus; outside a host (`agentdeck tool run` in its own process) a Bus of
        its own on the same store, for this wait only. Simpler than keeping a poll of the
        row beside the bus: one way to wait, and a Bus already sees other processes'
        commits (through `PRAGMA data_version`, not by reading the approval)."""
        if self.bus is not None:
            yield self.bus
            return
        own = await Bus(self.store).start()
        try:
            yield own
        finally:
            await own.close()

    async def _finish(self, call_id: int, agent: str, result: ToolResult, decision: Decision,
                      approval: Approval | None) -> GateOutcome:
        await self.store.write(r.finish_tool_call, agent, call_id, result.status, result.text)
        return GateOutcome(result=result, decision=decision, call_id=call_id, approval=approval)

    async def _abandon(self, as_agent: AgentStore, call_id: int, approval: Approval | None) -> None:
        """The caller went away (its task was cancelled): withdraw the question, close the row."""
        if approval is not None:
            with contextlib.suppress(InvalidTransition):
                await as_agent.write(r.cancel_approval, approval.id)
        with contextlib.suppress(InvalidTransition):
            await as_agent.write(r.finish_tool_call, call_id, "denied", "cancelled: its task was stopped")
