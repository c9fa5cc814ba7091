"""The command palette, built from the current state: send to an agent, pause or resume
one, cancel a task, undo or redo the changes of the selected (or focused agent's) task,
approve or deny what is pending, review an MCP server's withheld tools, switch theme,
open a task, export the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from agents.checkpoints.undo import RestoreKind
from agents.errors import AgentdeckError
from agents.runtime.change_text import outcome_text
from agents.runtime.log_export import export_log
from agents.safe_text import safe_text
from agents.store import queries
from app.cockpit import Cockpit
from themes import THEMES

Command = tuple[str, Callable[[], object], str]


class DeckCommands(Provider):
    async def _commands(self) -> list[Command]:
        app = self.app
        assert isinstance(app, Cockpit)
        connection = app.connection
        deck = app.deck_screen
        commands: list[Command] = []
        for name in app.agents:
            commands.append((f"send to {name}", partial(deck.prefill, f"@{name} "),
                             f"start a request to @{name}"))
        for name in app.agents:
            # Offered attached too: choosing it says why it cannot be done from here.
            verb = "resume" if connection.paused(name) else "pause"
            help_text = f"{verb} {name}: a paused agent takes no new tasks" if connection.embedded else \
                f"{verb} {name}: only where the crew runs (this cockpit is attached)"
            commands.append((f"{verb} {name}", partial(_run, app, _toggle_pause, name), help_text))
        store = connection.store
        if store is not None:
            for task in await store.read(queries.tasks, statuses=("queued", "active", "blocked",
                                                                  "waiting_approval", "deferred")):
                title = safe_text(task.title)[:60]
                commands.append((f"cancel task {task.id}: {title}", partial(_run, app, _cancel, task.id),
                                 "cancel it and its subtasks"))
            for task in (await store.read(queries.tasks))[-50:]:
                title = safe_text(task.title)[:60]
                commands.append((f"open task {task.id}: {title}", partial(deck.open_task, task.id),
                                 f"{task.status}, {task.owner or 'unassigned'}"))
            for tid in dict.fromkeys(t for t in (deck.selected_task, deck.focused_task) if t is not None):
                commands.append((f"undo task {tid}'s changes", partial(_run, app, _restore, tid, "undo"),
                                 "put back every file it changed, as before it (refused on a conflict)"))
                commands.append((f"redo task {tid}'s changes", partial(_run, app, _restore, tid, "redo"),
                                 "undo its undo: its changes back again"))
            for a in deck.approvals.pending:
                what = safe_text(f"{a.agent} {a.tool}")
                commands.append((f"approve {a.id}: {what}", partial(_run, app, _decide, a.id, True),
                                 "approve once"))
                commands.append((f"deny {a.id}: {what}", partial(_run, app, _decide, a.id, False), "deny"))
            for server, tools in deck.mcp_withheld.items():
                commands.append((f"review MCP changes of {server}", partial(deck.review_mcp, server),
                                 f"{len(tools)} tool(s) new or changed, withheld from agents until approved"))
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


def _run(app: Cockpit, job: Callable[..., Awaitable[str]], *args: object) -> None:
    async def go() -> None:
        try:
            app.notify(safe_text(await job(app, *args)))
        except AgentdeckError as err:
            app.notify(safe_text(str(err)), severity="error")

    app.run_worker(go(), group="palette", exit_on_error=False)


async def _toggle_pause(app: Cockpit, name: str) -> str:
    if app.connection.paused(name):
        await app.connection.resume(name)
        return f"{name} resumed"
    await app.connection.pause(name)
    return f"{name} paused: it finishes what it is doing and takes no new task"


async def _cancel(app: Cockpit, task_id: int) -> str:
    cancelled = await app.connection.cancel(task_id)
    more = f" and {len(cancelled) - 1} subtask(s)" if len(cancelled) > 1 else ""
    return f"cancelled task {task_id}{more}"


async def _decide(app: Cockpit, approval_id: int, approve: bool) -> str:
    await app.connection.decide(approval_id, approve)
    return f"approval {approval_id} {'approved' if approve else 'denied'}"


async def _restore(app: Cockpit, task_id: int, kind: RestoreKind) -> str:
    plan, outcome = await app.connection.restore(app.home, task_id, kind)
    app.deck_screen.read_changes()  # the detail and the panes say so now, not at the next refresh
    return outcome_text(plan, outcome)


async def _export(app: Cockpit) -> str:
    store = app.connection.store
    assert store is not None  # the command is offered only once the store is open
    path = await export_log(store, app.home)
    return f"log exported to {path}"
