"""The configured hooks, as the gate and the host use them: `tool.before` hooks judged in
line (the first that denies ends the call), every other event's hooks in the background,
a bounded number at a time, their failures logged and never in the work's way."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from agents.config import Config
from agents.config.schema import HookConfig
from agents.hooks.run import HookEvent, HookOutcome, matching, run_hook

log = logging.getLogger(__name__)

MAX_RUNNING = 4  # background hooks at once
MAX_WAITING = 64  # background hooks started or waiting; past it a run is dropped, and logged


class Hooks:
    def __init__(self, config: Config, home: Path, *, max_running: int = MAX_RUNNING,
                 max_waiting: int = MAX_WAITING) -> None:
        self.config = config
        self.home = home
        self._slots = asyncio.Semaphore(max_running)
        self._max_waiting = max_waiting
        self._background: set[asyncio.Task[HookOutcome]] = set()

    def wanted(self, event: str) -> bool:
        return any(h.event == event for h in self.config.hooks)

    async def before(self, agent: str, tool: str, arguments: object, *, task_id: int | None,
                     workspace: Path) -> HookOutcome | None:
        """The first `tool.before` hook that denies this call (its outcome), or None: go on."""
        event = HookEvent(event="tool.before", agent=agent, tool=tool, arguments=arguments, task_id=task_id)
        for hook in matching(self.config.hooks, event.event, agent, tool):
            outcome = await run_hook(hook, event, self.config, self.home, workspace)
            if outcome.denies:
                log.warning("%s: %s %s", outcome.message, agent, tool)
                return outcome
        return None

    def fire(self, event: HookEvent, workspace: Path | None = None) -> None:
        """Run this event's hooks in the background; returns at once."""
        for hook in matching(self.config.hooks, event.event, event.agent, event.tool):
            if len(self._background) >= self._max_waiting:
                log.warning("hook `%s` for %s not run: %d hooks already waiting", hook.command, event.event,
                            self._max_waiting)
                continue
            task = asyncio.create_task(self._run_in_background(hook, event, workspace))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run_in_background(self, hook: HookConfig, event: HookEvent,
                                 workspace: Path | None) -> HookOutcome:
        async with self._slots:
            outcome = await run_hook(hook, event, self.config, self.home,
                                     workspace or self.config.workspace_path())
        if outcome.failure:
            log.warning("%s (event %s)", outcome.message, event.event)
        return outcome

    async def settle(self) -> list[HookOutcome]:
        """Wait for the background runs started so far (tests; a front end about to exit)."""
        running = list(self._background)
        return list(await asyncio.gather(*running)) if running else []

    async def close(self) -> None:
        """Stop every background run (each kills its process group)."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background))
