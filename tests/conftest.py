"""Shared fixtures: a real agentdeck home and database in a temp dir. Plain helpers are in helpers.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_timeout

# Re-exported for files that still import these from conftest (test_hygiene.py); new code
# imports them from helpers.
from helpers import AGENTS, REPO, agentdeck_cmd, examples, start_test_clock, subprocess_env, unprivileged_dir  # noqa: F401
from hypothesis import settings

from agents.store import AsyncStore, Store

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


@pytest.fixture(autouse=True)
def _test_clock(request: pytest.FixtureRequest) -> None:
    """Starts helpers.time_left()'s clock with this test's own timeout: its
    @pytest.mark.timeout, else --timeout / PYTEST_TIMEOUT / the ini's `timeout`."""
    marker = request.node.get_closest_marker("timeout")
    timeout: float | None = None
    if marker is not None:
        timeout = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if timeout is None:
        timeout = pytest_timeout.get_env_settings(request.config).timeout
    start_test_clock(float(timeout) if timeout else None)


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
async def astore(db_path: Path) -> AsyncIterator[AsyncStore]:
    """The database opened for async tests (closed after the test)."""
    s = await AsyncStore(db_path, AGENTS).open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path, AGENTS)
    yield s
    s.close()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """An empty workspace directory beside the home."""
    w = tmp_path / "ws"
    w.mkdir()
    return w


@pytest.fixture
def keyring_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess whose keyring is a real file-backed backend (keyring_backend.py)."""
    return {
        "PYTHON_KEYRING_BACKEND": "keyring_backend.FileKeyring",
        "AGENTDECK_TEST_KEYRING": str(tmp_path / "keyring.json"),
        "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
    }


@pytest.fixture
def unprivileged_tmp(tmp_path: Path) -> Iterator[Path]:
    """A directory for checks that helpers.as_unprivileged runs: as root, one that the
    unprivileged user owns (removed after the test); as anyone else, tmp_path."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    made = unprivileged_dir()
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)
