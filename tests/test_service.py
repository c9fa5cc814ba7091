"""`agentdeck service`: the systemd user unit for `agentdeck run --headless`, written by the
real CLI, checked by the real `systemd-analyze verify`, and systemctl asked (a stand-in
systemctl on PATH that records its calls) only when a user manager answers."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import one_line_error, run, time_left

from agents.runtime.service import UnitSpec, render_unit


def _unit_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _install(home: Path, unit_dir: Path, ws: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(home, "service", "install", "--unit-dir", str(unit_dir), "--workspace", str(ws), *extra, **env)


def test_install_writes_the_unit_for_headless_run(home: Path, ws: Path, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    proc = _install(home, unit_dir, ws, "--approvals", "cli")
    assert proc.returncode == 0, proc.stderr
    lines = _unit_lines(unit_dir / "agentdeck.service")
    exec_start = shlex.split(next(ln for ln in lines if ln.startswith("ExecStart=")).removeprefix("ExecStart="))
    assert os.path.isabs(exec_start[0]) and os.access(exec_start[0], os.X_OK), exec_start
    assert exec_start[-4:] == ["run", "--headless", "--approvals", "cli"]
    assert f'Environment="AGENTDECK_HOME={home}"' in lines
    assert f"WorkingDirectory={ws}" in lines
    for setting in ("Restart=always", "TimeoutStopSec=15", "KillMode=mixed", "WantedBy=default.target"):
        assert setting in lines
    assert any(ln.startswith("RestartSec=") for ln in lines)
    # Not systemd's directory: systemctl is not asked; the two commands are said instead.
    assert "systemctl --user daemon-reload\n" in proc.stdout
    assert f"systemctl --user enable --now {unit_dir / 'agentdeck.service'}\n" in proc.stdout


def test_the_backoff_settings_only_for_a_systemd_that_knows_them(tmp_path: Path) -> None:
    spec = UnitSpec(command=["/usr/bin/agentdeck", "run", "--headless"], home="/h", workspace="/w")
    new, old = render_unit(spec, 254).splitlines(), render_unit(spec, 252).splitlines()
    assert {"RestartSteps=6", "RestartMaxDelaySec=120", "RestartSec=2"} <= set(new)
    assert not [ln for ln in old if ln.startswith(("RestartSteps=", "RestartMaxDelaySec="))]
    assert "RestartSec=5" in old


def test_awkward_paths_are_quoted_as_systemd_reads_them() -> None:
    spec = UnitSpec(command=["/opt/my tools/agentdeck", "run", "--headless"], home='/h/50% "x"', workspace="/w/%n")
    lines = render_unit(spec, 252).splitlines()
    assert 'ExecStart="/opt/my tools/agentdeck" run --headless' in lines
    assert 'Environment="AGENTDECK_HOME=/h/50%% \\"x\\""' in lines
    assert "WorkingDirectory=/w/%%n" in lines


@pytest.mark.timeout(60)
def test_systemd_analyze_verifies_the_unit(home: Path, ws: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing under CI")
        pytest.skip("no systemd-analyze here")
    unit_dir = tmp_path / "units"
    assert _install(home, unit_dir, ws).returncode == 0
    # --user without a running user manager: a runtime dir of its own is all it needs.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    proc = subprocess.run([analyze, "verify", "--user", str(unit_dir / "agentdeck.service")],
                          capture_output=True, text=True, timeout=time_left(),
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 0, proc.stderr
    assert "agentdeck.service" not in proc.stderr, proc.stderr  # no warning about our unit (unknown keys)


def test_install_refuses_to_overwrite_a_different_unit(home: Path, ws: Path, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    unit = unit_dir / "agentdeck.service"
    assert _install(home, unit_dir, ws, "--approvals", "cli").returncode == 0
    first = unit.read_text()
    again = _install(home, unit_dir, ws, "--approvals", "cli")  # the same unit: nothing to refuse
    assert again.returncode == 0 and again.stdout.startswith("unchanged ")
    refused = _install(home, unit_dir, ws, "--approvals", "deny")
    assert refused.returncode == 1
    assert "differs" in one_line_error(refused) and "--force" in one_line_error(refused)
    assert unit.read_text() == first
    forced = _install(home, unit_dir, ws, "--approvals", "deny", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "--approvals deny" in unit.read_text()


def test_uninstall_removes_the_unit_and_status_reports(home: Path, ws: Path, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    before = run(home, "service", "status", "--unit-dir", str(unit_dir))
    assert before.returncode == 0 and "installed: no" in before.stdout
    assert str(unit_dir / "agentdeck.service") in before.stdout
    assert _install(home, unit_dir, ws).returncode == 0
    state = json.loads(run(home, "service", "status", "--unit-dir", str(unit_dir), "--json").stdout)
    assert state["installed"] is True and state["exec_start"].endswith("run --headless --approvals cli")
    assert state["active"] is None and "not the user unit directory" in state["reason"]
    proc = run(home, "service", "uninstall", "--unit-dir", str(unit_dir))
    assert proc.returncode == 0 and proc.stdout.startswith("removed ")
    assert not (unit_dir / "agentdeck.service").exists()
    assert "not installed" in run(home, "service", "uninstall", "--unit-dir", str(unit_dir)).stdout


# --- with a user manager: a stand-in systemctl on PATH that records what it was asked ---


def _fake_systemctl(tmp_path: Path, *, state: str) -> tuple[dict[str, str], Path]:
    bin_dir, calls = tmp_path / "bin", tmp_path / "systemctl.calls"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {shlex.quote(str(calls))}
case "$*" in
  --version) echo "systemd 255 (255.4)" ;;
  "--user is-system-running") echo {state}; [ {state} = running ] ;;
  "--user is-active agentdeck.service") echo active ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return env, calls


def test_with_a_user_manager_install_enables_and_uninstall_disables(home: Path, ws: Path, tmp_path: Path) -> None:
    env, calls = _fake_systemctl(tmp_path, state="running")
    unit = tmp_path / "xdg" / "systemd" / "user" / "agentdeck.service"  # $XDG_CONFIG_HOME honoured
    proc = run(home, "service", "install", "--workspace", str(ws), **env)
    assert proc.returncode == 0, proc.stderr
    assert unit.is_file()
    assert "RestartSteps=6" in _unit_lines(unit)  # systemd 255 knows the backoff settings
    asked = calls.read_text().splitlines()
    assert asked[-2:] == ["--user daemon-reload", "--user enable agentdeck.service"]
    assert "enabled" in proc.stdout
    assert "active: active" in run(home, "service", "status", **env).stdout
    calls.unlink()
    assert run(home, "service", "uninstall", **env).returncode == 0
    assert not unit.exists()
    asked = calls.read_text().splitlines()
    assert asked[-2:] == ["--user disable --now agentdeck.service", "--user daemon-reload"]


def test_without_a_user_manager_install_only_says_the_commands(home: Path, ws: Path, tmp_path: Path) -> None:
    env, calls = _fake_systemctl(tmp_path, state="offline")
    proc = run(home, "service", "install", "--workspace", str(ws), **env)
    assert proc.returncode == 0, proc.stderr
    assert "no user systemd instance answered" in proc.stdout
    assert "  systemctl --user daemon-reload\n  systemctl --user enable --now agentdeck.service\n" in proc.stdout
    assert not [c for c in calls.read_text().splitlines() if "reload" in c or "enable" in c]
