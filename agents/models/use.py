"""Which model the agents use: `inference.model` in config.toml, a model name, a path, or
empty for the embedded SmolLM2. `use` rewrites that one key with tomlkit so the person's
comments and layout stay; the result must still load as a config before it is written."""

from __future__ import annotations

from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from agents.config import CONFIG_FILE, MAX_CONFIG_BYTES, parse_config
from agents.errors import ConfigError
from agents.home import (
    FileTooLarge,
    NotARegularFile,
    make_private_home,
    read_regular_text,
    write_private_text,
)
from agents.models.catalogue import CATALOGUE


def set_configured_model(home: Path, value: str) -> Path:
    """Write `[inference] model = value` into `home`'s config.toml (created if missing)."""
    path = home / CONFIG_FILE
    try:
        text = read_regular_text(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        text = ""
    except (NotARegularFile, FileTooLarge, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: {err}; a config is a UTF-8 TOML file") from None
    try:
        doc = tomlkit.parse(text)
        inference = doc.get("inference")
        if inference is None:
            inference = tomlkit.table()
            doc["inference"] = inference
        if not isinstance(inference, dict):
            raise ConfigError(f"{path}: inference is not a table")
        inference["model"] = value
        new_text = tomlkit.dumps(doc)
    except TOMLKitError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    parse_config(new_text, str(path))  # a config that would not load is not written
    make_private_home(home)
    write_private_text(path, new_text)
    return path


def model_in_use(configured: str) -> str:
    """The name (or path) the agents use for `inference.model = configured`."""
    return configured or next(e.name for e in CATALOGUE if e.embedded)


__all__ = ["model_in_use", "set_configured_model"]
