"""`agentdeck init` and `agentdeck secret set|delete|list`."""

from __future__ import annotations

import argparse
import getpass
import sys

from agents.config import CONFIG_FILE, default_config_text
from agents.errors import AgentdeckError
from agents.home import write_private_text
from agents.secrets import SecretStore, env_var, keyring_usable, no_keyring_message
from app.args import Parser, add_command, add_json_flag
from app.context import Context
from app.render import line, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "init", cmd_init, "write a commented default config.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")

    p = add_command(sub, "secret", cmd_secret, "secrets in the OS keyring")
    secret = p.add_subparsers(dest="secret_command", metavar="ACTION", required=True,
                              parser_class=Parser)
    s = secret.add_parser("set", help="store a secret (value read without echo)")
    s.add_argument("name", metavar="NAME")
    s = secret.add_parser("delete", help="delete a secret")
    s.add_argument("name", metavar="NAME")
    s = secret.add_parser("list", help="secret names and where each is found")
    add_json_flag(s)


def cmd_init(ctx: Context, args: argparse.Namespace) -> int:
    path = ctx.home / CONFIG_FILE
    if path.exists() and not args.force:
        raise AgentdeckError(f"{path} already exists; use --force to overwrite it")
    ctx.ensure_home()
    write_private_text(path, default_config_text())
    line(f"wrote {path}")
    return 0


def _read_value(name: str) -> str:
    """Without echo at a terminal; one line from stdin when piped."""
    if sys.stdin.isatty():
        return getpass.getpass(f"value for {name}: ")
    return sys.stdin.readline().rstrip("\r\n")


def cmd_secret(ctx: Context, args: argparse.Namespace) -> int:
    secrets = SecretStore(ctx.home)
    if args.secret_command == "set":
        if not keyring_usable():  # say so before asking for the value
            raise AgentdeckError(no_keyring_message(args.name))
        secrets.set(args.name, _read_value(args.name))
        line(f"secret {args.name} stored in the keyring")
        return 0
    if args.secret_command == "delete":
        secrets.delete(args.name)
        line(f"secret {args.name} deleted")
        return 0
    rows = [{"name": n, "source": secrets.where(n), "env": env_var(n)} for n in secrets.names()]
    if args.json:
        print_json({"keyring": keyring_usable(), "secrets": rows})
        return 0
    if not keyring_usable():
        line("keyring: no usable backend; secrets come from AGENTDECK_SECRET_<NAME> variables")
    if not rows:
        line("no secrets")
        return 0
    table(["name", "source", "environment variable"], [(r["name"], r["source"], r["env"]) for r in rows])
    return 0
