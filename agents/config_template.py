"""Kept so `from agents.config_template import default_config_text` still works; the
template lives in agents/config/template.py (import it from agents.config)."""

from agents.config.template import default_config_text

__all__ = ["default_config_text"]
