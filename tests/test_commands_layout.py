"""The command tree is app/commands/, one module per noun, each registering its own
commands (and app/bench/ registering `bench`). These checks fail when a command is lost,
registered twice, left without a handler, or listed out of today's order, and when a
module is left out of app.commands.MODULES."""

from __future__ import annotations

import argparse
import os
import pkgutil
import subprocess
import sys
from collections.abc import Callable, Iterator

from conftest import REPO

import app.commands
from app.args import Parser
from app.bench import register as register_bench
from app.cli import build_parser

# `agentdeck --help`, in its order.
LISTING = [
    "run", "attach", "send", "tell", "messages", "tasks", "cancel", "changes", "undo", "redo", "merge",
    "status", "approvals", "approve",
    "deny", "schedules", "rules", "policy", "tool", "log", "doctor", "mcp", "models", "backup", "init", "secret",
    "usage", "hooks", "service", "completion", "web", "bench",
]


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _registered_by(register: Callable[[argparse._SubParsersAction], None]) -> list[str]:
    """The commands one register function adds, on a parser of its own."""
    sub = Parser(prog="agentdeck").add_subparsers(dest="command", parser_class=Parser)
    register(sub)
    return list(sub.choices)


def _by_module() -> dict[str, list[str]]:
    found = {module.__name__: _registered_by(module.register) for module in app.commands.MODULES}
    found["app.bench"] = _registered_by(register_bench)
    return found


def test_each_command_is_registered_by_exactly_one_module_in_listing_order() -> None:
    by_module = _by_module()
    assert all(by_module.values()), {m: names for m, names in by_module.items() if not names}
    registered = [name for names in by_module.values() for name in names]
    twice = sorted({name for name in registered if registered.count(name) > 1})
    assert twice == []
    sub = _subparsers(build_parser())
    assert sub is not None
    assert list(sub.choices) == registered == LISTING


def test_every_module_of_the_package_is_registered() -> None:
    modules = {m.name for m in pkgutil.iter_modules(app.commands.__path__) if not m.name.startswith("_")}
    listed = {module.__name__.removeprefix("app.commands.") for module in app.commands.MODULES}
    assert modules == listed
    assert len(app.commands.MODULES) == len(listed)  # none listed twice


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...], handler: object
            ) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every command line a user can end on, with the handler it dispatches to (a
    subcommand's own default wins over its parent's)."""
    handler = parser.get_default("handler") or handler
    sub = _subparsers(parser)
    if sub is None or not sub.required:
        yield path, handler
    for name, child in (sub.choices.items() if sub is not None else ()):
        yield from _leaves(child, (*path, name), handler)


def test_every_command_line_reaches_a_handler() -> None:
    sub = _subparsers(build_parser())
    assert sub is not None
    leaves = [leaf for name, p in sub.choices.items() for leaf in _leaves(p, (name,), None)]
    assert len(leaves) > len(LISTING)  # the ACTIONs of schedules, rules, policy, ... too
    assert [path for path, handler in leaves if not callable(handler)] == []


def test_the_parser_imports_neither_textual_nor_more_than_the_stdlib_early() -> None:
    """app.cli imports only the standard library at module level (its error boundary is not
    in place yet), and building the parser leaves textual for the TUI commands."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import app.cli\n"
        "early = sorted({n.split('.')[0] for n in set(sys.modules) - before}"
        " - set(sys.stdlib_module_names) - {'app'})\n"
        "app.cli.build_parser()\n"
        "tui = sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.'))\n"
        "print(early, tui)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []"
