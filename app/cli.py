"""The `agentdeck` command: argument parsing, dispatch, and the one-line error boundary."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence

from agents.errors import AgentdeckError
from agents.protocol import TASK_STATUSES
from agents.store.reducers.tasks import MAX_PRIORITY
from app.context import Context

Handler = Callable[[Context, argparse.Namespace], int]


MAX_ID = 2**63 - 1  # SQLite's largest integer


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"out of range: {text}")
    return value


def _priority(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"priority is 0..{MAX_PRIORITY}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from app import bench_bus, bench_inference, cmd_log, cmd_setup, commands, doctor, instance

    parser = argparse.ArgumentParser(
        prog="agentdeck",
        description="A crew of five local LLM agents in one terminal.",
    )
    parser.add_argument("--home", metavar="DIR", help="state and config dir (default: $AGENTDECK_HOME "
                        "or the platform's user data dir)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def add_json(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("run", instance.cmd_run, "start agentdeck (headless until the TUI lands)")
    instance.add_arguments(p)

    p = add("send", commands.cmd_send, "give the crew a task; prints its id")
    p.add_argument("--to", metavar="AGENT", help="assign it to this agent (default: the router)")
    p.add_argument("--priority", type=_priority, default=1, help="0..9, higher first (default 1)")
    p.add_argument("text", nargs="+", metavar="TEXT")

    p = add("tasks", commands.cmd_tasks, "list tasks")
    add_json(p)
    p.add_argument("--tree", action="store_true", help="show parent/child structure")
    p.add_argument("--owner", metavar="AGENT")
    p.add_argument("--status", action="append", choices=TASK_STATUSES, help="repeatable")

    p = add("status", commands.cmd_status, "agents, approvals and task counts")
    add_json(p)

    p = add("approvals", commands.cmd_approvals, "list pending approvals")
    add_json(p)
    p.add_argument("--all", action="store_true", help="include decided ones")

    p = add("approve", commands.cmd_approve, "approve a pending approval")
    p.add_argument("id", type=_positive_int, metavar="ID")
    p.add_argument("--always", action="store_true", help="also save an allow rule for it")

    p = add("deny", commands.cmd_deny, "deny a pending approval")
    p.add_argument("id", type=_positive_int, metavar="ID")

    p = add("log", cmd_log.cmd_log, "the event log")
    add_json(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--since", type=_positive_int, default=0, metavar="ID", help="events after ID")
    p.add_argument("--last", type=_positive_int, metavar="N", help="only the last N events")

    p = add("doctor", doctor.cmd_doctor, "check the set-up, one line per part")
    add_json(p)

    p = add("init", cmd_setup.cmd_init, "write a commented default config.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")

    p = add("secret", cmd_setup.cmd_secret, "secrets in the OS keyring")
    secret = p.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    s = secret.add_parser("set", help="store a secret (value read without echo)")
    s.add_argument("name", metavar="NAME")
    s = secret.add_parser("delete", help="delete a secret")
    s.add_argument("name", metavar="NAME")
    s = secret.add_parser("list", help="secret names and where each is found")
    add_json(s)

    p = add("bench", _bench_usage, "benchmarks: bus, inference")
    bench = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    b = bench.add_parser("bus", help="durable events/s and latency vs raw sqlite3")
    b.set_defaults(handler=bench_bus.cmd_bench_bus)
    bench_bus.add_arguments(b)
    b = bench.add_parser("inference", help="continuous batching vs one-at-a-time")
    b.set_defaults(handler=_bench_inference)
    bench_inference.add_arguments(b)
    return parser


def _bench_usage(_ctx: Context, _args: argparse.Namespace) -> int:
    return 2  # unreachable: argparse requires WHAT


def _bench_inference(ctx: Context, args: argparse.Namespace) -> int:
    from app import bench_inference

    return bench_inference.run(args, ctx.config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "run"])
    logging.basicConfig(level=logging.WARNING, format="agentdeck: %(message)s")
    ctx = Context(args.home)
    try:
        return args.handler(ctx, args)
    except AgentdeckError as err:
        print(f"agentdeck: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `agentdeck log | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except sqlite3.Error as err:  # locked past the busy timeout, disk full, I/O error
        print(f"agentdeck: database {ctx.db_path}: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. a home dir we cannot create or write
        print(f"agentdeck: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: still one line; AGENTDECK_DEBUG=1 shows the traceback
        if os.environ.get("AGENTDECK_DEBUG"):
            raise
        print(f"agentdeck: internal error: {type(err).__name__}: {err} "
              "(run with AGENTDECK_DEBUG=1 for details)", file=sys.stderr)
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
