"""What every command needs: the home dir, the config and the store, opened on demand."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from agents.config import DATABASE_FILE, Config, home_dir, load_config
from agents.store import Store


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
        self.home.mkdir(parents=True, exist_ok=True)

    @cached_property
    def store(self) -> Store:
        self.ensure_home()
        return Store.open(self.db_path, self.config.enabled_agents())

    def close(self) -> None:
        store = self.__dict__.pop("store", None)
        if store is not None:
            store.close()
