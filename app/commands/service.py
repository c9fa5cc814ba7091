"""`agentdeck service install|uninstall|status`: agentdeck headless as a systemd user
service (agents.runtime.service writes the unit and asks systemctl)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.runtime import service
from app.args import Parser, add_command, add_json_flag
from app.context import Context
from app.render import line, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "service", cmd_service, "run agentdeck headless as a systemd user service")
    actions = p.add_subparsers(dest="service_command", metavar="ACTION", required=True, parser_class=Parser)
    unit_dir_help = ("directory of the unit file (default: $XDG_CONFIG_HOME/systemd/user, "
                     "else ~/.config/systemd/user)")

    s = actions.add_parser("install", help="write the unit for `agentdeck run --headless`, enable it")
    s.add_argument("--approvals", choices=service.APPROVAL_MODES, default="cli",
                   help="cli (default): approvals wait for `agentdeck approve ID` (and [notify] tells you); "
                   "deny: every request is denied")
    s.add_argument("--workspace", metavar="DIR", help="the service's working directory (default: the "
                   "config's workspace, else the current directory)")
    s.add_argument("--force", action="store_true", help="replace a different existing unit")
    s.add_argument("--unit-dir", metavar="DIR", help=unit_dir_help)

    s = actions.add_parser("uninstall", help="stop, disable and remove the unit")
    s.add_argument("--unit-dir", metavar="DIR", help=unit_dir_help)

    s = actions.add_parser("status", help="the unit file, and whether the service is active")
    s.add_argument("--unit-dir", metavar="DIR", help=unit_dir_help)
    add_json_flag(s)


def _unit_dir(args: argparse.Namespace) -> Path:
    return Path(args.unit_dir).expanduser().absolute() if args.unit_dir else service.default_unit_dir()


def cmd_service(ctx: Context, args: argparse.Namespace) -> int:
    unit_dir = _unit_dir(args)
    if args.service_command == "install":
        return _install(ctx, args, unit_dir)
    if args.service_command == "uninstall":
        result = service.uninstall(unit_dir)
        if not result.removed:
            line(f"not installed: no {result.path}")
            return 0
        line(f"removed {result.path}" + ("; stopped and disabled" if result.disabled else ""))
        _manual(result.reason, result.manual_steps)
        return 0
    state = service.status(unit_dir)
    if args.json:
        print_json(state)
        return 0
    line(f"unit file: {state.path}")
    line(f"installed: {'yes' if state.installed else 'no'}")
    if state.installed:
        line(f"runs: {state.exec_start}")
    line(f"active: {state.active}" if state.active is not None else f"active: unknown ({state.reason})")
    return 0


def _install(ctx: Context, args: argparse.Namespace, unit_dir: Path) -> int:
    workspace = Path(args.workspace).expanduser().resolve() if args.workspace else ctx.config.workspace_path()
    spec = service.UnitSpec(command=service.agentdeck_command(args.approvals), home=str(ctx.home),
                            workspace=str(workspace))
    text = service.render_unit(spec, service.systemd_version())
    result = service.install(unit_dir, text, force=args.force)
    line(f"{'wrote' if result.written else 'unchanged'} {result.path}")
    line(f"runs: {service.installed_exec_start(text)}")
    line(f"home: {spec.home}; workspace: {spec.workspace}")
    if result.enabled:
        line("enabled; start it now with: systemctl --user start " + service.UNIT_NAME)
    _manual(result.reason, result.manual_steps)
    return 0


def _manual(reason: str, steps: list[str]) -> None:
    if not steps:
        return
    line(f"systemctl not asked: {reason}; run:")
    for step in steps:
        line(f"  {step}")
