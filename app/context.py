"""What every command needs: the home dir, the config and the store, opened on demand."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

from agents.config import DATABASE_FILE, Config, home_dir, load_config
from agents.home import make_private_home
from agents.store import Store

log = logging.getLogger(__name__)


class Context:
    def __init__(self, home: str | None) -> None:
        self.home: Path = home_dir(home)

    @cached_property
    def config(self) -> Config:
        return load_config(self.home)

    @property
    def db_path(self) -> Path:
        return self.home / DATABASE_FILE

    def ensure_home(self) -> None:
        """Create the home 0700, or tighten what other users could read in it."""
        notes = make_private_home(self.home)
        if notes:  # fixed now, so said once
            log.warning("made private (other users could read them): %s", ", ".join(notes))

    @cached_property
    def store(self) -> Store:
        self.ensure_home()
        return Store.open(self.db_path, self.config.enabled_agents())

    def close(self) -> None:
        store = self.__dict__.pop("store", None)
        if store is not None:
            store.close()
