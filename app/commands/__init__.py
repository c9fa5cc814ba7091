"""Every `agentdeck` command but `bench`, one module per noun. Each module's
`register(sub)` adds its command(s), with their arguments and handlers, to the
top-level subparsers; `register_all` adds them all, in the order `agentdeck --help`
lists them.

A handler is `(ctx: Context, args: argparse.Namespace) -> int`, the exit code; `app.cli`
runs it inside the error boundary.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from app.commands import (
    approvals,
    attach,
    backup,
    changes,
    completion,
    doctor,
    gate,
    hooks,
    log,
    mcp,
    merge,
    messages,
    models,
    rules,
    run,
    schedules,
    send,
    service,
    setup,
    status,
    tasks,
    usage,
    web,
)

# The order of `agentdeck --help`. (`send` has a module of its own: it comes before
# `tell` and `messages` in the listing, `tasks` and `cancel` after them.)
MODULES: tuple[ModuleType, ...] = (
    run, attach, send, messages, tasks, changes, merge, status, approvals, schedules, rules, gate, log,
    doctor, mcp, models, backup, setup, usage, hooks, service, completion, web,
)


def register_all(sub: argparse._SubParsersAction) -> None:
    for module in MODULES:
        module.register(sub)
