"""Configuration: the schema (schema.py), the default crew (default_crew.toml, read by
defaults.py), loading and checking (load.py, check.py) and `agentdeck init`'s commented
file (template.py). Importers use the names re-exported here."""

from agents.config.defaults import DEFAULT_AGENTS, DEFAULT_RULES, DEFAULT_SCHEDULES, default_config
from agents.config.load import (
    CONFIG_FILE,
    DATABASE_FILE,
    HOME_ENV,
    MAX_CONFIG_BYTES,
    home_dir,
    load_config,
    parse_config,
)
from agents.config.schema import (
    AgentConfig,
    CheckpointConfig,
    Config,
    InferenceConfig,
    RuleConfig,
    SamplingConfig,
    ScheduleConfig,
    UiConfig,
)
from agents.config.template import default_config_text
from agents.limits import MAX_N_BATCH, MAX_N_CTX, MAX_SLOTS, MAX_THREADS

__all__ = [
    "CONFIG_FILE", "DATABASE_FILE", "DEFAULT_AGENTS", "DEFAULT_RULES", "DEFAULT_SCHEDULES", "HOME_ENV",
    "MAX_CONFIG_BYTES", "MAX_N_BATCH", "MAX_N_CTX", "MAX_SLOTS", "MAX_THREADS", "AgentConfig",
    "CheckpointConfig", "Config", "InferenceConfig", "RuleConfig", "SamplingConfig", "ScheduleConfig",
    "UiConfig", "default_config",
    "default_config_text", "home_dir", "load_config", "parse_config",
]
