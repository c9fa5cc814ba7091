"""The command palette, built from the current state: send to an agent, pause or resume
one, cancel a task, approve or deny what is pending, switch theme, open a task, export
the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from agents.errors import AgentdeckError
from agents.protocol import OWNER
from agents.safe_text import safe_text
from agents.store import queries
from agents.store import reducers as r
from themes import THEMES

if TYPE_CHECKING:
    from app.cockpit import Cockpit

Command = tuple[str, Callable[[], object], str]


class DeckCommands(Provider):
    async def _commands(self) -> list[Command]:
        app: Cockpit = self.app  # type: ignore[assignment]
        commands: list[Command] = []
        for name in app.agents:
            commands.append((f"send to {name}", partial(_prefill, app, name), f"start a request to @{name}"))
        crew = app.connection.host.crew if app.connection.embedded and app.connection.host else None  # type: ignore[attr-defined]
        if crew is not None:
            for name in app.agents:
                loop = crew.loops[name]
                verb = "resume" if loop.paused else "pause"
                commands.append((f"{verb} {name}", partial(_toggle_pause, app, name),
                                 f"{verb} {name}: a paused agent takes no new tasks"))
        store = app.connection.store
        if store is not None:
            for task in await store.read(queries.tasks, statuses=("queued", "active", "blocked",
                                                                  "waiting_approval", "deferred")):
                title = safe_text(task.title)[:60]
                commands.append((f"cancel task {task.id}: {title}", partial(_run, app, _cancel, task.id),
                                 "cancel it and its subtasks"))
            for task in (await store.read(queries.tasks))[-50:]:
                title = safe_text(task.title)[:60]
                commands.append((f"open task {task.id}: {title}", partial(app.open_task, task.id),
                                 f"{task.status}, {task.owner or 'unassigned'}"))
            for a in app.pending:
                what = safe_text(f"{a.agent} {a.tool}")
                commands.append((f"approve {a.id}: {what}", partial(_run, app, _decide, a.id, True),
                                 "approve once"))
                commands.append((f"deny {a.id}: {what}", partial(_run, app, _decide, a.id, False), "deny"))
            commands.append(("export the log", partial(_run, app, _export),
                             "write the event log as JSON lines"))
        for theme in THEMES:
            commands.append((f"theme: {theme}", partial(setattr, app, "theme", theme), "switch theme"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in await self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in await self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


def _prefill(app: Cockpit, name: str) -> None:
    from widgets.composer import Composer

    composer = app._main(Composer)
    composer.value = f"@{name} "
    composer.cursor_position = len(composer.value)
    composer.focus()


def _toggle_pause(app: Cockpit, name: str) -> None:
    crew = app.connection.host.crew  # type: ignore[attr-defined]
    loop = crew.loops[name]
    loop.pause(not loop.paused)
    app.notify(f"{name} {'paused' if loop.paused else 'resumed'}")


def _run(app: Cockpit, job: Callable[..., Awaitable[str]], *args: object) -> None:
    async def go() -> None:
        try:
            app.notify(safe_text(await job(app, *args)))
        except AgentdeckError as err:
            app.notify(safe_text(str(err)), severity="error")

    app.run_worker(go(), group="palette", exit_on_error=False)


async def _cancel(app: Cockpit, task_id: int) -> str:
    assert app.connection.store is not None
    cancelled = await app.connection.store.write(r.cancel_task, OWNER, task_id)
    more = f" and {len(cancelled) - 1} subtask(s)" if len(cancelled) > 1 else ""
    return f"cancelled task {task_id}{more}"


async def _decide(app: Cockpit, approval_id: int, approve: bool) -> str:
    assert app.connection.store is not None
    await app.connection.store.write(r.decide_approval, OWNER, approval_id, approve)
    return f"approval {approval_id} {'approved' if approve else 'denied'}"


async def _export(app: Cockpit) -> str:
    path = await app.export_log()
    return f"log exported to {path}"
