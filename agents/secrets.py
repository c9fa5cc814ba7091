"""Secrets: kept in the OS keyring (service "agentdeck"), or in AGENTDECK_SECRET_<NAME>.

A config value written `keyring:NAME` is resolved only when it is used, and so is one
written `env:VAR` (read from the environment variable VAR, for keys a shell already holds). Values never go
into the database, events or logs; only the names are remembered (in `secret-names` in
the home dir) so that `agentdeck secret list` can show them.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keyring
import keyring.errors
from keyring.backends import fail

from agents.errors import AgentdeckError, ConfigError
from agents.home import PRIVATE_DIR, PRIVATE_FILE, read_regular_text, write_private_text

SERVICE = "agentdeck"
ENV_PREFIX = "AGENTDECK_SECRET_"
REFERENCE_PREFIX = "keyring:"
ENV_REFERENCE_PREFIX = "env:"
NAMES_FILE = "secret-names"
MAX_NAMES_BYTES = 1 << 20
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class SecretError(AgentdeckError):
    """A secret could not be stored, read or deleted."""


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise SecretError(f"bad secret name {name!r}: a letter, then letters, digits or _")
    return name


def backend_name() -> str:
    kr = keyring.get_keyring()
    return f"{type(kr).__module__}.{type(kr).__name__}"


def keyring_usable() -> bool:
    """False for keyring's `fail` backend: common on headless servers."""
    kr = keyring.get_keyring()
    return not isinstance(kr, fail.Keyring) and getattr(kr, "priority", 1) > 0


def no_keyring_message(name: str) -> str:
    return (
        f"no usable keyring backend ({backend_name()}); set the environment variable "
        f"{env_var(name)} instead"
    )


class SecretStore:
    """Names in `home/secret-names`, values in the keyring."""

    def __init__(self, home: Path) -> None:
        self.names_path = home / NAMES_FILE
        self.lock_path = home / f"{NAMES_FILE}.lock"

    def names(self) -> list[str]:
        try:
            text = read_regular_text(self.names_path, MAX_NAMES_BYTES)
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as err:
            raise SecretError(f"{self.names_path}: cannot read the secret names: {err}") from None
        return sorted({line.strip() for line in text.splitlines() if line.strip()})

    @contextmanager
    def _names_locked(self) -> Iterator[None]:
        """Read-modify-write of the names file under an exclusive lock: twelve
        `secret set` at once must keep all twelve names."""
        self.names_path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _add_name(self, name: str) -> None:
        with self._names_locked():
            self._write_names([*self.names(), name])

    def _remove_name(self, name: str) -> None:
        with self._names_locked():
            self._write_names([n for n in self.names() if n != name])

    def _write_names(self, names: list[str]) -> None:
        write_private_text(self.names_path, "".join(f"{n}\n" for n in sorted(set(names))))

    def set(self, name: str, value: str) -> None:
        check_name(name)
        if not value:
            raise SecretError(f"empty value for secret {name}; nothing stored")
        if not keyring_usable():
            raise SecretError(no_keyring_message(name))
        try:
            keyring.set_password(SERVICE, name, value)
        except keyring.errors.KeyringError as err:
            raise SecretError(f"keyring refused secret {name}: {err}; or set {env_var(name)}") from None
        self._add_name(name)

    def delete(self, name: str) -> None:
        check_name(name)
        known = name in self.names()
        if keyring_usable():
            try:
                if keyring.get_password(SERVICE, name) is not None:
                    keyring.delete_password(SERVICE, name)
                    known = True
            except keyring.errors.KeyringError as err:
                raise SecretError(f"keyring refused to delete {name}: {err}") from None
        if not known:
            raise SecretError(f"no secret named {name}")
        self._remove_name(name)

    def where(self, name: str) -> str:
        """'env', 'keyring' or 'missing' — never the value."""
        if os.environ.get(env_var(name)):
            return "env"
        if keyring_usable():
            try:
                if keyring.get_password(SERVICE, name) is not None:
                    return "keyring"
            except keyring.errors.KeyringError:
                return "missing"
        return "missing"


def get_secret(name: str) -> str | None:
    """The environment variable wins (explicit at run time), then the keyring."""
    check_name(name)
    value = os.environ.get(env_var(name))
    if value:
        return value
    if keyring_usable():
        try:
            return keyring.get_password(SERVICE, name)
        except keyring.errors.KeyringError:
            return None
    return None


def resolve(value: str, key_path: str = "value") -> str:
    """A config value: `keyring:NAME` becomes the secret, `env:VAR` the variable's value,
    anything else is returned as is."""
    if value.startswith(ENV_REFERENCE_PREFIX):
        var = value.removeprefix(ENV_REFERENCE_PREFIX)
        found = os.environ.get(var) if ENV_VAR_RE.fullmatch(var) else None
        if not found:
            raise ConfigError(f"{key_path}: environment variable {var!r} is not set")
        return found
    if not value.startswith(REFERENCE_PREFIX):
        return value
    name = value.removeprefix(REFERENCE_PREFIX)
    try:
        secret = get_secret(name)
    except SecretError as err:
        raise ConfigError(f"{key_path}: {err}") from None
    if secret is None:
        hint = f"`agentdeck secret set {name}`" if keyring_usable() else no_keyring_message(name)
        raise ConfigError(f"{key_path}: secret {name} is not set ({hint}; or set {env_var(name)})")
    return secret
