"""Secrets through a real keyring backend, and the environment-variable fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ok, one_line_error, run

from agents.config import parse_config
from agents.errors import ConfigError

FAIL_BACKEND = "keyring.backends.fail.Keyring"


def test_set_list_delete_through_the_keyring(home: Path, keyring_env: dict[str, str]) -> None:
    proc = run(home, "secret", "set", "github", stdin="s3cr3t-value\n", **keyring_env)
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t-value" not in proc.stdout + proc.stderr
    stored = json.loads(Path(keyring_env["AGENTDECK_TEST_KEYRING"]).read_text())
    assert stored == {"agentdeck/github": "s3cr3t-value"}
    listing = json.loads(ok(home, "secret", "list", "--json", **keyring_env))
    assert listing["keyring"] is True
    assert listing["secrets"] == [
        {"name": "github", "source": "keyring", "env": "AGENTDECK_SECRET_GITHUB"}
    ]
    # The value is nowhere in agentdeck's own files.
    for path in home.iterdir():
        assert b"s3cr3t-value" not in path.read_bytes()
    ok(home, "secret", "delete", "github", **keyring_env)
    assert json.loads(Path(keyring_env["AGENTDECK_TEST_KEYRING"]).read_text()) == {}
    assert json.loads(ok(home, "secret", "list", "--json", **keyring_env))["secrets"] == []
    again = run(home, "secret", "delete", "github", **keyring_env)
    assert again.returncode == 1 and "no secret named github" in one_line_error(again)


def test_without_a_keyring_the_message_names_the_env_variable(home: Path) -> None:
    proc = run(home, "secret", "set", "github", stdin="x\n", PYTHON_KEYRING_BACKEND=FAIL_BACKEND)
    assert proc.returncode == 1
    assert "AGENTDECK_SECRET_GITHUB" in one_line_error(proc)
    listing = json.loads(ok(home, "secret", "list", "--json", PYTHON_KEYRING_BACKEND=FAIL_BACKEND))
    assert listing["keyring"] is False


def test_keyring_reference_resolves_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_BACKEND)
    config = parse_config('[tool_env]\nGITHUB_TOKEN = "keyring:github"\nPLAIN = "x"\n')
    assert config.tool_env["GITHUB_TOKEN"] == "keyring:github"  # unresolved until used
    monkeypatch.delenv("AGENTDECK_SECRET_GITHUB", raising=False)
    with pytest.raises(ConfigError, match=r"tool_env.GITHUB_TOKEN: secret github is not set.*AGENTDECK_SECRET_GITHUB"):
        config.resolved_tool_env()
    monkeypatch.setenv("AGENTDECK_SECRET_GITHUB", "from-env")
    assert config.resolved_tool_env() == {"GITHUB_TOKEN": "from-env", "PLAIN": "x"}


def test_bad_secret_name(home: Path, keyring_env: dict[str, str]) -> None:
    proc = run(home, "secret", "set", "no spaces", stdin="x\n", **keyring_env)
    assert proc.returncode == 1 and "bad secret name" in one_line_error(proc)
