"""The `agentdeck` command: argument parsing, dispatch, and the one-line error boundary.

Only the standard library is imported at module level: everything else is imported
inside `main()`'s error boundary, so a Ctrl-C while the imports run (the first few
tenths of a second) exits 130 quietly instead of printing a traceback.
"""

from __future__ import annotations

import os
import signal

# Until this module has loaded, Ctrl-C ends the process quietly with 130; main() then
# imports everything else inside its own boundary. (Restored at the end of the module,
# so importing app.cli elsewhere leaves SIGINT as it was.)
try:
    _previous_sigint = signal.signal(signal.SIGINT, lambda *_: os._exit(130))
except ValueError:  # imported off the main thread: signals are not ours to set
    _previous_sigint = None

import argparse
import sys
from collections.abc import Sequence

from app.args import Parser, home_dir, positive_int, priority, seconds


def build_parser() -> argparse.ArgumentParser:
    from agents.protocol import TASK_STATUSES
    from app import (
        backup,
        cmd_gate,
        cmd_log,
        cmd_messages,
        cmd_setup,
        commands,
        doctor,
        instance,
    )
    from app.bench import register as register_bench

    def cmd_attach(ctx: object, args: argparse.Namespace) -> int:
        from app.tui import cmd_attach as attach  # textual is imported only for the TUI

        return attach(ctx, args)  # type: ignore[arg-type]

    parser = Parser(
        prog="agentdeck",
        description="A crew of five local LLM agents in one terminal.",
    )
    parser.add_argument("--headless", action="store_true", help="with no COMMAND: run without the TUI")
    parser.add_argument("--home", metavar="DIR", type=home_dir, help="state and config dir (default: "
                        "$AGENTDECK_HOME or the platform's user data dir)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def add_json(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    def add_call(p: argparse.ArgumentParser) -> None:
        """One tool call: AGENT TOOL ARGS_JSON."""
        p.add_argument("agent", metavar="AGENT")
        p.add_argument("tool", metavar="TOOL")
        p.add_argument("args_json", metavar="ARGS_JSON", help='e.g. \'{"path": "README.md"}\'')
        add_json(p)

    p = add("run", instance.cmd_run, "start agentdeck: the TUI in a terminal, or --headless")
    instance.add_arguments(p)

    p = add("attach", cmd_attach, "open the TUI on the home of an instance running headless")

    p = add("send", commands.cmd_send, "give the crew a task; prints its id")
    p.add_argument("--to", metavar="AGENT", help="assign it to this agent (default: the router)")
    p.add_argument("--priority", type=priority, default=1, help="0..9, higher first (default 1)")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the request; - reads it from stdin "
                   "(the title is its first line)")

    p = add("tell", cmd_messages.cmd_tell, "send AGENT a direct message; it becomes work for that agent")
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("text", nargs="+", metavar="TEXT")

    p = add("messages", cmd_messages.cmd_messages, "your direct messages (replies), or a channel's")
    add_json(p)
    p.add_argument("--channel", metavar="NAME", help="a channel instead, e.g. agent-logs")
    p.add_argument("--last", type=positive_int, default=30, metavar="N", help="how many (default 30)")

    p = add("tasks", commands.cmd_tasks, "list tasks")
    add_json(p)
    p.add_argument("--tree", action="store_true", help="show parent/child structure")
    p.add_argument("--owner", metavar="AGENT")
    p.add_argument("--status", action="append", choices=TASK_STATUSES, help="repeatable")

    p = add("cancel", commands.cmd_cancel, "cancel a task and its subtasks; a running step is stopped")
    p.add_argument("id", type=positive_int, metavar="ID")

    p = add("status", commands.cmd_status, "agents, approvals and task counts")
    add_json(p)

    p = add("approvals", commands.cmd_approvals, "list pending approvals")
    add_json(p)
    p.add_argument("--all", action="store_true", help="include decided ones")

    p = add("approve", commands.cmd_approve, "approve a pending approval")
    p.add_argument("id", type=positive_int, metavar="ID")
    p.add_argument("--always", action="store_true", help="also save an allow rule for it")

    p = add("deny", commands.cmd_deny, "deny a pending approval")
    p.add_argument("id", type=positive_int, metavar="ID")

    p = add("schedules", commands.cmd_schedules, "recurring tasks: list, add, remove")
    add_json(p)
    sched = p.add_subparsers(dest="schedule_command", metavar="ACTION", parser_class=Parser)
    s = sched.add_parser("add", help="give AGENT a task named NAME every SECONDS, or on --cron EXPR")
    s.add_argument("agent", metavar="AGENT")
    s.add_argument("name", metavar="NAME")
    s.add_argument("every", type=seconds, metavar="SECONDS", nargs="?", help="1 s .. 366 days")
    s.add_argument("--cron", metavar="EXPR", help='a cron expression, e.g. "0 9 * * 1-5"')
    s.add_argument("--body", metavar="TEXT", help="what the task asks")
    s = sched.add_parser("remove", help="delete a schedule")
    s.add_argument("id", type=positive_int, metavar="ID")

    p = add("rules", cmd_gate.cmd_rules, "permission rules: list, add, remove")
    add_json(p)
    rules = p.add_subparsers(dest="rules_command", metavar="ACTION", parser_class=Parser)
    s = rules.add_parser("add", help="add a rule: AGENT (or *) TOOL PATTERN allow|ask|deny")
    s.add_argument("agent", metavar="AGENT")
    s.add_argument("tool", metavar="TOOL")
    s.add_argument("pattern", metavar="PATTERN", help="run_shell: a command prefix; file tools: a path glob")
    s.add_argument("decision", choices=["allow", "ask", "deny"])
    s = rules.add_parser("remove", help="delete a rule of your own (config rules live in config.toml)")
    s.add_argument("id", type=positive_int, metavar="ID")

    p = add("policy", None, "ask the gate without running anything")
    policy = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True, parser_class=Parser)
    s = policy.add_parser("check", help="what the gate would decide for AGENT TOOL ARGS_JSON")
    s.set_defaults(handler=cmd_gate.cmd_policy_check)
    add_call(s)

    p = add("tool", None, "run one tool call as an agent, through the whole gate")
    tool = p.add_subparsers(dest="tool_command", metavar="ACTION", required=True, parser_class=Parser)
    s = tool.add_parser("run", help="run TOOL as AGENT with ARGS_JSON; asks when the gate asks")
    s.set_defaults(handler=cmd_gate.cmd_tool_run)
    add_call(s)
    s.add_argument("--approve-via", choices=["cli"], help="wait for `agentdeck approve/deny ID` from "
                   "another terminal instead of asking here")
    s.add_argument("--reason", metavar="TEXT", help="why the call is made (shown with the approval)")
    s.add_argument("--task", type=positive_int, metavar="ID", help="the agent's current task")

    p = add("log", cmd_log.cmd_log, "the event log")
    add_json(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--since", type=positive_int, default=0, metavar="ID", help="events after ID")
    p.add_argument("--last", type=positive_int, metavar="N", help="only the last N events")

    p = add("doctor", doctor.cmd_doctor, "check the set-up, one line per part")
    add_json(p)

    p = add("backup", backup.cmd_backup, "a consistent copy of the database, safe while running")
    p.add_argument("path", metavar="PATH", help="file to write, or a directory to write it in")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = add("init", cmd_setup.cmd_init, "write a commented default config.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")

    p = add("secret", cmd_setup.cmd_secret, "secrets in the OS keyring")
    secret = p.add_subparsers(dest="secret_command", metavar="ACTION", required=True,
                              parser_class=Parser)
    s = secret.add_parser("set", help="store a secret (value read without echo)")
    s.add_argument("name", metavar="NAME")
    s = secret.add_parser("delete", help="delete a secret")
    s.add_argument("name", metavar="NAME")
    s = secret.add_parser("list", help="secret names and where each is found")
    add_json(s)

    register_bench(sub)
    return parser


def _print_error(message: str) -> None:
    from agents.safe_text import safe_text

    sys.stderr.write(f"agentdeck: {safe_text(message)}\n")


def main(argv: Sequence[str] | None = None) -> int:
    ctx = None
    try:
        # A stdout or stderr that cannot encode some character (a latin-1 or ASCII pipe)
        # shows it as an escape instead of failing halfway through the output.
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        import sqlite3

        from agents.errors import AgentdeckError
        from app.context import Context
        from app.logs import setup_logging

        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # `agentdeck [--headless]`: run
            rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--headless"]
            args = parser.parse_args([*rest, "run", *(["--headless"] if args.headless else [])])
        setup_logging()
        ctx = Context(args.home)
        try:
            return args.handler(ctx, args)
        except AgentdeckError as err:
            _print_error(str(err))
            return err.exit_code
        except sqlite3.Error as err:  # locked past the busy timeout, disk full, I/O error
            from agents.store.database import disk_full

            _print_error(str(disk_full(ctx.db_path, err) or f"database {ctx.db_path}: {err}"))
            return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agentdeck log | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # e.g. a home dir we cannot create or write
        _print_error(f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}")
        return 1
    except Exception as err:  # a bug: still one line; AGENTDECK_DEBUG=1 shows the traceback
        if os.environ.get("AGENTDECK_DEBUG"):
            raise
        _print_error(f"internal error: {type(err).__name__}: {err} "
                     "(run with AGENTDECK_DEBUG=1 for details)")
        return 1
    finally:
        if ctx is not None:
            ctx.close()


if _previous_sigint is not None:
    signal.signal(signal.SIGINT, _previous_sigint)

if __name__ == "__main__":
    sys.exit(main())
