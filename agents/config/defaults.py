"""The defaults: the schema's own, plus the crew read from default_crew.toml (product
content, edited there: the five agents' roles, prompts, tools and priorities, the
permission rules and the schedules)."""

from __future__ import annotations

import tomllib
from importlib import resources

import msgspec

from agents.config.schema import AgentConfig, Config, RuleConfig, ScheduleConfig

CREW_FILE = "default_crew.toml"


class DefaultCrew(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    shared_prompt: str  # ends every agent's system prompt
    agents: dict[str, AgentConfig]
    rules: list[RuleConfig]
    schedules: list[ScheduleConfig]


def read_default_crew(text: str | None = None) -> DefaultCrew:
    """The crew from `text`, else from the packaged default_crew.toml; the shared prompt
    is appended to each agent's."""
    if text is None:
        text = resources.files(__package__).joinpath(CREW_FILE).read_text(encoding="utf-8")
    crew = msgspec.convert(tomllib.loads(text), DefaultCrew, strict=True)
    for agent in crew.agents.values():
        agent.system_prompt = f"{agent.system_prompt} {crew.shared_prompt}"
    return crew


_CREW = read_default_crew()
DEFAULT_AGENTS: dict[str, AgentConfig] = _CREW.agents
DEFAULT_RULES: list[RuleConfig] = _CREW.rules
DEFAULT_SCHEDULES: list[ScheduleConfig] = _CREW.schedules


def default_config() -> Config:
    return Config(
        agents={name: msgspec.structs.replace(a) for name, a in DEFAULT_AGENTS.items()},
        rules=list(DEFAULT_RULES),
        schedules=list(DEFAULT_SCHEDULES),
    )
