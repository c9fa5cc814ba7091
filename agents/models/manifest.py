"""The installed models: `<home>/models/`, private like the home, with `manifest.json`
naming each model's file, size, sha256 and source. A model is installed exactly when the
manifest names it; its file is moved into place before the entry is written and the entry
removed before the file, so a crash between the two leaves no entry without a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec

from agents.errors import AgentdeckError
from agents.home import PRIVATE_FILE, make_private_home, read_regular_text, write_private_text

MODELS_DIR = "models"
MANIFEST_FILE = "manifest.json"
PARTIAL_DIR = ".partial"  # resumable downloads, one directory per model name
MAX_MANIFEST_BYTES = 1 << 20
# A name is also a config value (`inference.model = "NAME"`), told from a path by its shape:
# no slash, no `.gguf` suffix.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")


class ManifestError(AgentdeckError):
    exit_code = 2


class InstalledModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    file: str  # relative to the models directory
    size: int
    sha256: str
    source: str  # pypi:..., hf:REPO/FILE@COMMIT or local:PATH
    installed_at: float


class Manifest(msgspec.Struct, kw_only=True):
    models: list[InstalledModel] = msgspec.field(default_factory=list)


def is_model_name(text: str) -> bool:
    """Whether a `--model` or `inference.model` value names a model rather than a file."""
    return bool(NAME_PATTERN.fullmatch(text)) and not text.endswith(".gguf")


def models_dir(home: Path) -> Path:
    return home / MODELS_DIR


def ensure_models_dir(home: Path) -> Path:
    """`<home>/models/` created 0700 (and the home too), loose modes in it tightened."""
    make_private_home(home)
    path = models_dir(home)
    make_private_home(path)
    return path


def read_manifest(home: Path) -> Manifest:
    path = models_dir(home) / MANIFEST_FILE
    try:
        text = read_regular_text(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return Manifest()
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read ({err}); move it away to start afresh") from None
    try:
        return msgspec.json.decode(text, type=Manifest)
    except msgspec.DecodeError as err:
        raise ManifestError(f"{path}: not a models manifest ({err}); move it away to start afresh") from None


def installed(home: Path, name: str) -> InstalledModel | None:
    return next((m for m in read_manifest(home).models if m.name == name), None)


def installed_path(home: Path, model: InstalledModel) -> Path:
    return models_dir(home) / model.file


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One writer of the manifest at a time (two pulls finishing together keep both)."""
    lock = ensure_models_dir(home) / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(home: Path, manifest: Manifest) -> None:
    manifest.models.sort(key=lambda m: m.name)
    write_private_text(models_dir(home) / MANIFEST_FILE,
                       msgspec.json.format(msgspec.json.encode(manifest)).decode() + "\n")


def record(home: Path, model: InstalledModel) -> None:
    """Add `model`, replacing an entry of the same name."""
    with _locked(home):
        manifest = read_manifest(home)
        manifest.models = [m for m in manifest.models if m.name != model.name] + [model]
        _write(home, manifest)


def forget(home: Path, name: str) -> InstalledModel | None:
    """Remove the entry for `name` (its file is the caller's); the entry, or None."""
    with _locked(home):
        manifest = read_manifest(home)
        found = next((m for m in manifest.models if m.name == name), None)
        if found is not None:
            manifest.models = [m for m in manifest.models if m.name != name]
            _write(home, manifest)
        return found


__all__ = [
    "InstalledModel", "Manifest", "ManifestError", "ensure_models_dir", "forget", "installed",
    "installed_path", "is_model_name", "models_dir", "read_manifest", "record",
]
