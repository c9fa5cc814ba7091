"""Loading: TOML at $AGENTDECK_HOME/config.toml, merged over the defaults (so
`[agents.dev] priority = 5` keeps dev's prompt and tools), checked against the schema,
decoded with msgspec, then checked across fields; any problem is one ConfigError line
naming the key path.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import platformdirs
from croniter import croniter

from agents.config.check import check_tree
from agents.config.defaults import default_config
from agents.config.schema import BackendConfig, Config
from agents.errors import AgentdeckError, ConfigError, InvalidArgument
from agents.home import FileTooLarge, NotARegularFile, read_regular_text
from agents.secrets import ENV_REFERENCE_PREFIX, ENV_VAR_RE, REFERENCE_PREFIX, check_name

CONFIG_FILE = "config.toml"
MAX_CONFIG_BYTES = 1 << 20
DATABASE_FILE = "agentdeck.db"
HOME_ENV = "AGENTDECK_HOME"
EMBEDDED_BACKEND = "embedded"  # the engine [inference] describes; always defined


def home_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """--home DIR, else $AGENTDECK_HOME, else the platform's user data dir."""
    if override:
        return Path(override).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_data_dir("agentdeck", appauthor=False)).absolute()


def load_config(home: Path) -> Config:
    """The config in `home`, or the defaults when there is no file."""
    path = home / CONFIG_FILE
    try:
        text = read_regular_text(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return default_config()
    except (NotARegularFile, FileTooLarge) as err:
        raise ConfigError(f"{err}; a config is a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str = CONFIG_FILE) -> Config:
    """Decode TOML text merged over the defaults; raise ConfigError naming the key path."""
    try:
        return _parse(text, source)
    except RecursionError:  # tomllib and the merge recurse per level of [[[...]]]
        raise ConfigError(f"{source}: nested too deeply to be a config") from None


def _parse(text: str, source: str) -> Config:
    try:
        raw = tomllib.loads(text)
    except ValueError as err:  # TOMLDecodeError, or an integer of over 4300 digits
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    merged = _merge(msgspec.to_builtins(default_config()), raw)
    try:
        check_tree(merged, Config)
        config = msgspec.convert(merged, Config, strict=True)  # fits now; Meta checks again
        _check_across(config)
    except (InvalidArgument, msgspec.ValidationError) as err:
        raise ConfigError(f"{source}: {err}") from None
    return config


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_across(config: Config) -> None:
    """What a field's own range cannot say: names, references between agents, rules, tools
    and schedules, cron syntax, paths. Raises InvalidArgument for the first problem."""
    from agents.tools import TOOLS  # here, not at the top: the tools import the engine,
    from agents.tools.shell import secret_in  # which imports this package

    tool_names = list(TOOLS)
    for name, agent in config.agents.items():
        if not re.fullmatch(r"[a-z][a-z0-9_\-]{0,31}", name):
            raise InvalidArgument(f"agents.{name}: agent names are lowercase letters, digits, _ or -")
        if name in ("owner", "system"):
            raise InvalidArgument(f"agents.{name}: '{name}' is reserved")
        unknown = [t for t in agent.tools if t not in tool_names]
        if unknown:
            raise InvalidArgument(f"agents.{name}.tools: unknown tool {unknown[0]!r} "
                                  f"(tools: {', '.join(tool_names)})")
    _check_backends(config)
    _check_mcp(config)
    _check_notify_and_hooks(config)
    for i, rule in enumerate(config.rules):
        if rule.agent != "*" and rule.agent not in config.agents:
            raise InvalidArgument(f"rules[{i}].agent: unknown agent {rule.agent!r}")
        if rule.tool not in tool_names and not mcp_rule_tool(rule.tool, config):
            raise InvalidArgument(f"rules[{i}].tool: unknown tool {rule.tool!r}")
        if not rule.pattern.strip():
            raise InvalidArgument(f"rules[{i}].pattern: empty")
    for key in ("sandbox_hide", "sandbox_show"):
        for i, path in enumerate(getattr(config, key)):
            if not os.path.isabs(os.path.expanduser(path)) or os.path.normpath(path) == "/":
                raise InvalidArgument(f"{key}[{i}]: {path!r} is not an absolute path (or ~/...) below /")
            if key == "sandbox_show" and (secret := secret_in(path)):
                raise InvalidArgument(f"{key}[{i}]: {path!r} would show {secret} to commands; "
                                      "name a toolchain directory inside it instead")
    for i, sched in enumerate(config.schedules):
        where = f"schedules[{i}]"
        if sched.agent not in config.agents:
            raise InvalidArgument(f"{where}.agent: unknown agent {sched.agent!r}")
        if (sched.every_s is None) == (sched.cron is None):
            raise InvalidArgument(f"{where}: give either every_s or cron")
        if sched.cron is not None and not croniter.is_valid(sched.cron):
            raise InvalidArgument(f"{where}.cron: not a cron expression: {sched.cron!r}")
        if not sched.name.strip():
            raise InvalidArgument(f"{where}.name: empty")


MCP_SERVER_NAME = re.compile(r"[a-z][a-z0-9_\-]{0,31}")
MCP_TOOL = re.compile(r"mcp\.([a-z][a-z0-9_\-]{0,31})\.([A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}|\*)")


def mcp_rule_tool(tool: str, config: Config) -> bool:
    """`mcp.SERVER.TOOL` or `mcp.SERVER.*` for a configured server."""
    found = MCP_TOOL.fullmatch(tool)
    return found is not None and found.group(1) in config.mcp


def _check_mcp(config: Config) -> None:
    for name, server in config.mcp.items():
        where = f"mcp.{name}"
        if not MCP_SERVER_NAME.fullmatch(name):
            raise InvalidArgument(f"{where}: server names are lowercase letters, digits, _ or - "
                                  "(they become part of tool names: mcp.NAME.TOOL)")
        if bool(server.command) == bool(server.url):
            raise InvalidArgument(f"{where}: give either command (a stdio server) or url (streamable HTTP)")
        if server.url:
            url = urlsplit(server.url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise InvalidArgument(f"{where}.url: {server.url!r} is not an http:// or https:// URL")
        if server.command and (server.headers or not server.command.strip()):
            raise InvalidArgument(f"{where}.headers: only a url server takes headers")
        if server.url and (server.args or server.env):
            raise InvalidArgument(f"{where}: args and env are for a command (stdio) server")
        for agent in server.agents:
            if agent not in config.agents:
                raise InvalidArgument(f"{where}.agents: unknown agent {agent!r} "
                                      f"(agents: {', '.join(config.agents)})")
        for key, value in (*server.env.items(), *server.headers.items()):
            if "\n" in key or "\n" in value or "\x00" in value:
                raise InvalidArgument(f"{where}: {key!r}: a value with a line break or NUL")


CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _check_notify_and_hooks(config: Config) -> None:
    notify = config.notify
    if notify.url:
        url = urlsplit(notify.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(f"notify.url: {notify.url!r} is not an http:// or https:// URL")
    if bool(notify.quiet_start) != bool(notify.quiet_end):
        raise InvalidArgument("notify: give both quiet_start and quiet_end, or neither")
    for key in ("quiet_start", "quiet_end"):
        value = getattr(notify, key)
        if value and not CLOCK.fullmatch(value):
            raise InvalidArgument(f"notify.{key}: {value!r} is not a time of day as HH:MM")
    for key, value in notify.headers.items():
        if "\n" in key or "\n" in value or "\x00" in value:
            raise InvalidArgument(f"notify.headers: {key!r}: a value with a line break or NUL")
    for i, hook in enumerate(config.hooks):
        where = f"hooks[{i}]"
        if not hook.command.strip():
            raise InvalidArgument(f"{where}.command: empty")
        if hook.agent and hook.agent not in config.agents:
            raise InvalidArgument(f"{where}.agent: unknown agent {hook.agent!r}")
        if hook.tool and not hook.event.startswith("tool."):
            raise InvalidArgument(f"{where}.tool: only tool.before and tool.after hooks match a tool")
    for model in config.prices:
        if not model.strip():
            raise InvalidArgument("prices: an empty model name")


def _check_backends(config: Config) -> None:
    """[backends.NAME] tables, default_backend and each agent's `model` (a backend name)."""
    for name, backend in config.backends.items():
        _check_backend(f"backends.{name}", name, backend)
    known = [EMBEDDED_BACKEND, *(n for n in config.backends if n != EMBEDDED_BACKEND)]
    listed = ", ".join(known)
    if config.default_backend not in known:
        raise InvalidArgument(f"default_backend: no backend named {config.default_backend!r} "
                              f"(backends: {listed})")
    for name, agent in config.agents.items():
        if agent.model and agent.model not in known:
            raise InvalidArgument(f"agents.{name}.model: no backend named {agent.model!r} "
                                  f"(backends: {listed}; define it under [backends.{agent.model}])")


def _check_backend(where: str, name: str, backend: BackendConfig) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]{0,31}", name):
        raise InvalidArgument(f"{where}: backend names are letters, digits, _ or -")
    if name == EMBEDDED_BACKEND and backend.kind != "embedded":
        raise InvalidArgument(f'{where}.kind: "{EMBEDDED_BACKEND}" is the embedded engine\'s name; '
                              f'give the {backend.kind} backend another name')
    if backend.kind == "openai":
        if not backend.url:
            raise InvalidArgument(f"{where}.url: missing (an OpenAI-compatible server's base URL, "
                                  "e.g. http://127.0.0.1:8080/v1)")
        url = urlsplit(backend.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(f"{where}.url: {backend.url!r} is not an http:// or https:// URL")
    _check_api_key(f"{where}.api_key", backend.api_key)


def _check_api_key(where: str, value: str) -> None:
    """A key is named, never written into the config: "keyring:NAME" or "env:VAR"."""
    if not value:
        return
    if value.startswith(REFERENCE_PREFIX):
        try:
            check_name(value.removeprefix(REFERENCE_PREFIX))
        except AgentdeckError as err:
            raise InvalidArgument(f"{where}: {err}") from None
        return
    var = value.removeprefix(ENV_REFERENCE_PREFIX)
    if value.startswith(ENV_REFERENCE_PREFIX) and ENV_VAR_RE.fullmatch(var):
        return
    # Never echo the value: it may be the key itself.
    raise InvalidArgument(f'{where}: write "keyring:NAME" (`agentdeck secret set NAME`) or "env:VAR", '
                          "not the key itself")
