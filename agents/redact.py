"""Secret values never leave a tool call: they are replaced by `[secret:NAME]` in tool
output before it is stored, logged, shown or given to the model."""

from __future__ import annotations

import os
import re
from pathlib import Path

from agents.config import Config
from agents.secrets import ENV_PREFIX, REFERENCE_PREFIX, SecretError, SecretStore, get_secret

MIN_SECRET = 4  # shorter values would redact ordinary text; doctor-worthy, not redactable


class Redactor:
    def __init__(self, secrets: dict[str, str]) -> None:
        values = sorted(((v, n) for n, v in secrets.items() if len(v) >= MIN_SECRET),
                        key=lambda vn: len(vn[0]), reverse=True)  # the longest first
        self._names = {v: n for v, n in values}
        self._pattern = re.compile("|".join(re.escape(v) for v, _ in values)) if values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: f"[secret:{self._names[m.group(0)]}]", text)


def secret_names(home: Path, config: Config) -> set[str]:
    """Every secret agentdeck knows of: stored ones, ones the config refers to, and
    AGENTDECK_SECRET_* variables in the environment."""
    try:
        names = set(SecretStore(home).names())
    except SecretError:
        names = set()
    envs = [config.tool_env, *(a.tool_env for a in config.agents.values()),
            *(m.env for m in config.mcp.values()), *(m.headers for m in config.mcp.values()),
            config.notify.headers]
    names |= {v.removeprefix(REFERENCE_PREFIX) for env in envs for v in env.values()
              if v.startswith(REFERENCE_PREFIX)}
    # AGENTDECK_SECRET_OTHER is the variable of `keyring:other`: one secret, not two.
    known = {n.upper() for n in names}
    names |= {k.removeprefix(ENV_PREFIX) for k in os.environ
              if k.startswith(ENV_PREFIX) and k.removeprefix(ENV_PREFIX).upper() not in known}
    return names


def redactor_for(home: Path, config: Config) -> Redactor:
    values: dict[str, str] = {}
    for name in secret_names(home, config):
        try:
            value = get_secret(name)
        except SecretError:
            continue
        if value:
            values[name] = value
    return Redactor(values)
