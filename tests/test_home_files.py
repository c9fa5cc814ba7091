"""agentdeck's home: private to its user; files in it that cannot hang or crash a command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import agentdeck_cmd, ok, one_line_error, run, subprocess_env

from agents.home import read_regular_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def loose_umask_run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI under umask 022, the usual default that made every file 0644."""
    return subprocess.run(agentdeck_cmd(*args), env=subprocess_env(home, **env), capture_output=True,
                          text=True, timeout=60, preexec_fn=lambda: os.umask(0o022))


def test_a_new_home_and_its_files_are_private_under_umask_022(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    assert loose_umask_run(home, "send", "a secret plan").returncode == 0
    assert loose_umask_run(home, "init").returncode == 0
    assert mode(home) == 0o700
    files = {p.name: mode(p) for p in home.iterdir()}
    assert {"agentdeck.db", "config.toml"} <= files.keys()
    # The WAL and shared-memory files take the database's mode.
    assert all(m == 0o600 for m in files.values()), files


def test_loose_modes_are_tightened_on_open_and_said_once(home: Path, db_path: Path) -> None:
    ok(home, "send", "hello")
    (home / "config.toml").write_text("")
    os.chmod(home, 0o755)
    os.chmod(db_path, 0o644)
    os.chmod(home / "config.toml", 0o664)
    doctor = json.loads(run(home, "doctor", "--json").stdout)
    perms = next(c for c in doctor if c["name"] == "permissions")
    assert perms["status"] == "warn" and "agentdeck.db (0644)" in perms["detail"]
    assert mode(db_path) == 0o644  # doctor only reports

    first = loose_umask_run(home, "tasks")
    assert first.returncode == 0
    assert "agentdeck.db 0644 -> 0600" in first.stderr and "config.toml 0664 -> 0600" in first.stderr
    assert mode(home) == 0o700 and mode(db_path) == 0o600 and mode(home / "config.toml") == 0o600
    second = loose_umask_run(home, "tasks")
    assert second.returncode == 0 and second.stderr == ""
    doctor = json.loads(run(home, "doctor", "--json").stdout)
    assert next(c for c in doctor if c["name"] == "permissions")["status"] == "ok"


def test_a_fifo_as_config_is_refused_not_waited_on(home: Path) -> None:
    os.mkfifo(home / "config.toml")
    proc = run(home, "tasks")  # run() times out after 60 s: a hang fails the test
    assert proc.returncode == 2
    assert "config.toml: not a regular file" in one_line_error(proc)


def test_a_device_or_a_directory_as_config_is_refused(home: Path) -> None:
    (home / "config.toml").symlink_to("/dev/zero")
    proc = run(home, "status")
    assert proc.returncode == 2 and "not a regular file" in one_line_error(proc)
    (home / "config.toml").unlink()
    (home / "config.toml").mkdir()
    proc = run(home, "status")
    assert proc.returncode == 2 and "not a regular file" in one_line_error(proc)


@pytest.mark.parametrize("text", [
    "a = " + "[" * 3000 + "]" * 3000,
    "a = " + "{b = " * 3000 + "1" + "}" * 3000,
    "[" + ".".join(["k"] * 3000) + "]\n",
], ids=["arrays", "inline-tables", "dotted-table"])
def test_a_config_nested_thousands_deep_is_one_line(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)
    proc = run(home, "tasks")
    assert proc.returncode == 2
    error = one_line_error(proc)
    assert "config.toml" in error and "internal error" not in error


def test_a_huge_config_is_refused(home: Path) -> None:
    (home / "config.toml").write_text("# " + "x" * (2 << 20) + "\n")
    proc = run(home, "tasks")
    assert proc.returncode == 2 and "larger than 1024 KiB" in one_line_error(proc)


def test_read_regular_text_checks_the_opened_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular_text(fifo, 100)
    (tmp_path / "f").write_text("hello")
    assert read_regular_text(tmp_path / "f", 100) == "hello"


def test_concurrent_secret_set_keeps_every_name(home: Path, keyring_env: dict[str, str]) -> None:
    names = [f"TOKEN_{i}" for i in range(24)]
    procs = [
        subprocess.Popen(agentdeck_cmd("secret", "set", name), env=subprocess_env(home, **keyring_env),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("value\n")
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    listed = json.loads(ok(home, "secret", "list", "--json", **keyring_env))["secrets"]
    assert sorted(s["name"] for s in listed) == sorted(names)
    assert mode(home / "secret-names") == 0o600
