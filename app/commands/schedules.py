"""`agentdeck schedules`: recurring tasks: list, add, remove."""

from __future__ import annotations

import argparse

from agents.errors import InvalidArgument
from agents.protocol import OWNER, Schedule
from agents.store import queries
from agents.store.reducers import remove_schedule, set_schedule
from app.args import Parser, add_command, add_json_flag, positive_int, seconds
from app.context import Context
from app.render import line, listing, shorten, when


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "schedules", cmd_schedules, "recurring tasks: list, add, remove")
    add_json_flag(p)
    sched = p.add_subparsers(dest="schedule_command", metavar="ACTION", parser_class=Parser)
    s = sched.add_parser("add", help="give AGENT a task named NAME every SECONDS, or on --cron EXPR")
    s.add_argument("agent", metavar="AGENT")
    s.add_argument("name", metavar="NAME")
    s.add_argument("every", type=seconds, metavar="SECONDS", nargs="?", help="1 s .. 366 days")
    s.add_argument("--cron", metavar="EXPR", help='a cron expression, e.g. "0 9 * * 1-5"')
    s.add_argument("--body", metavar="TEXT", help="what the task asks")
    s = sched.add_parser("remove", help="delete a schedule")
    s.add_argument("id", type=positive_int, metavar="ID")


def cmd_schedules(ctx: Context, args: argparse.Namespace) -> int:
    action = getattr(args, "schedule_command", None)
    if action == "add":
        agents = ctx.config.enabled_agents()
        if args.agent not in agents:
            raise InvalidArgument(f"unknown agent {args.agent!r} (agents: {', '.join(agents)})",
                                  exit_code=2)
        if (args.every is None) == (args.cron is None):
            raise InvalidArgument("give either SECONDS or --cron EXPR", exit_code=2)
        schedule = ctx.store.write(
            set_schedule, OWNER, args.agent, args.name, 60.0 if args.every is None else args.every,
            body=args.body or "",
            cron=args.cron,
        )
        how = f"on {schedule.cron!r}" if schedule.cron else f"every {schedule.interval_s:g} s"
        line(f"schedule {schedule.id}: {schedule.agent} {schedule.name} {how}, next at "
             f"{when(schedule.next_run_at)}")
        return 0
    if action == "remove":
        removed = ctx.store.write(remove_schedule, OWNER, args.id)
        line(f"schedule {removed.id} removed: {removed.agent} {removed.name}")
        return 0
    listing(ctx.store.read(queries.schedules), args.json, "no schedules",
            ["id", "agent", "name", "every", "next run", "last run", "state"],
            lambda s: (s.id, s.agent, shorten(s.name, 30), s.cron or f"{s.interval_s:g}s",
                       when(s.next_run_at), when(s.last_run_at), _schedule_state(s)))
    return 0


def _schedule_state(s: Schedule) -> str:
    if s.enabled:
        return "on"
    return f"off: {shorten(s.last_error, 50)}" if s.last_error else "off"
