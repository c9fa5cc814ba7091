"""A model name (`inference.model = "qwen2.5-coder-1.5b"`, `--model NAME`) to its file."""

from __future__ import annotations

from pathlib import Path

from agents.errors import ModelError
from agents.models.catalogue import catalogue_entry
from agents.models.manifest import installed, installed_path


def is_known_name(home: Path, name: str) -> bool:
    return catalogue_entry(name) is not None or installed(home, name) is not None


def installed_model_file(home: Path, name: str) -> Path:
    """The file of the installed model `name` (the embedded SmolLM2 counts as installed);
    ModelError saying how to pull it otherwise."""
    found = installed(home, name)
    if found is not None:
        path = installed_path(home, found)
        if path.is_file():
            return path
        raise ModelError(f"model {name}'s file {path} is gone — run `agentdeck models pull {name}` "
                         "to fetch it again")
    entry = catalogue_entry(name)
    if entry is not None and entry.embedded:
        from agents.inference.model import embedded_model_path

        embedded = embedded_model_path()
        if embedded is not None:
            return embedded
    if entry is not None:
        raise ModelError(f"model {name} is not installed — run `agentdeck models pull {name}`")
    raise ModelError(f"unknown model {name}: not installed and not in the catalogue — "
                     "`agentdeck models list` shows them, `agentdeck models pull NAME` installs one")
