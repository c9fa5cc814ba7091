"""Shared fixtures: a real agentdeck home and database in a temp dir."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from agents.config import DEFAULT_AGENTS
from agents.store import Store

AGENTS = tuple(DEFAULT_AGENTS)  # lead, dev, review, ops, scribe
REPO = Path(__file__).resolve().parent.parent

# Files the tests write (configs, homes) are private, as agentdeck makes them; otherwise
# every first command in a test home would rightly say it made them private. The tests
# of that behaviour set loose modes themselves.
os.umask(0o077)

# Hypothesis: by default (CI, `make test`) every run draws the same examples, so a property
# passes or fails by the code and never by the draw; a failure it finds is pinned with
# @example. `make test-props` explores: HYPOTHESIS_PROFILE=deep, random, many more examples.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("deep", max_examples=5_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")


def examples(count: int) -> int:
    """A property's example count: `count`, or the profile's when larger (deep)."""
    return max(count, settings.default.max_examples)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty AGENTDECK_HOME; the environment points at it for subprocesses too."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("AGENTDECK_HOME", str(home))
    return home


@pytest.fixture
def db_path(home: Path) -> Path:
    return home / "agentdeck.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path, AGENTS)
    yield s
    s.close()


def agentdeck_cmd(*args: str) -> list[str]:
    """argv for running the real CLI in a subprocess."""
    return [sys.executable, "-m", "app.cli", *args]


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AGENTDECK_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env
