"""agentdeck as a systemd user service: the unit file for `agentdeck run --headless`,
written, removed and reported on. systemctl is asked only when a user systemd instance
answers, and only about a unit in the directory it reads; every call has a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from agents.errors import AgentdeckError

UNIT_NAME = "agentdeck.service"
SYSTEMCTL_TIMEOUT_S = 15.0  # daemon-reload on a busy machine can take a few seconds
APPROVAL_MODES = ("cli", "deny")
# Restart backoff: from RESTART_SEC doubling up to RESTART_MAX_DELAY_S over RESTART_STEPS
# restarts (systemd 254 added RestartSteps= and RestartMaxDelaySec=; older ones warn
# "Unknown key" for them, so they wait OLD_RESTART_SEC between every restart instead).
BACKOFF_SINCE_SYSTEMD = 254
TYPE_EXEC_SINCE_SYSTEMD = 240
RESTART_SEC = 2
RESTART_STEPS = 6
RESTART_MAX_DELAY_S = 120
OLD_RESTART_SEC = 5
# A stopped agentdeck ends within seconds of SIGTERM; past this the rest is killed.
TIMEOUT_STOP_S = 15
# States `systemctl --user is-system-running` prints when a user manager answered.
_MANAGER_STATES = {"initializing", "starting", "running", "degraded", "maintenance", "stopping"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnitSpec(msgspec.Struct, frozen=True):
    """What the unit runs: the command line, the home and the workspace."""

    command: list[str]
    home: str
    workspace: str


class InstallResult(msgspec.Struct):
    path: str
    written: bool  # False: the same unit was already there
    enabled: bool  # daemon-reload and enable ran
    manual_steps: list[str]  # commands for the person to run when systemctl was not asked
    reason: str  # why systemctl was not asked ("" when it was)


class UninstallResult(msgspec.Struct):
    path: str
    removed: bool
    disabled: bool
    manual_steps: list[str]
    reason: str


class ServiceStatus(msgspec.Struct):
    path: str
    installed: bool
    exec_start: str  # the installed unit's ExecStart= ("" when not installed)
    active: str | None  # `systemctl --user is-active`, None when not asked
    reason: str  # why systemctl was not asked


def default_unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where a user's systemd reads units it did not ship: $XDG_CONFIG_HOME/systemd/user."""
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME") or ""
    base = Path(config) if os.path.isabs(config) else Path.home() / ".config"  # relative: ignored, per spec
    return base / "systemd" / "user"


def agentdeck_command(approvals: str) -> list[str]:
    """`agentdeck run --headless` by absolute path: the console script beside this
    interpreter, else the interpreter with -P (so the workspace, its working directory,
    is not put on the import path)."""
    if approvals not in APPROVAL_MODES:
        raise AgentdeckError(f"approvals must be one of {', '.join(APPROVAL_MODES)}, not {approvals!r}",
                             exit_code=2)
    python = os.path.abspath(sys.executable)  # not resolved: a venv's python is a symlink
    script = Path(python).parent / "agentdeck"
    if script.is_file() and os.access(script, os.X_OK):
        entry = [str(script)]
    else:
        entry = [python, "-P", "-m", "app.cli"]
    return [*entry, "run", "--headless", "--approvals", approvals]


def _check(spec: UnitSpec) -> None:
    """Paths systemd can take: absolute, and one line without control characters (a unit
    has no escape for a newline in a path)."""
    paths = (("home", spec.home), ("workspace", spec.workspace), ("command", spec.command[0]))
    for what, value in paths:
        if not os.path.isabs(value):
            raise AgentdeckError(f"{what} must be an absolute path, not {value!r}", exit_code=2)
    for what, value in (*paths, ("command", " ".join(spec.command))):
        if _CONTROL.search(value):
            raise AgentdeckError(f"{what} has a control character, which systemd cannot take: {value!r}",
                                 exit_code=2)


def _specifiers(value: str) -> str:
    return value.replace("%", "%%")  # systemd expands %x specifiers in these settings


def _exec_word(word: str) -> str:
    """One ExecStart= word, quoted as systemd splits them: `%` and `$` are expanded, `\\`
    and `"` are escapes, whitespace separates."""
    escaped = _specifiers(word).replace("$", "$$").replace("\\", "\\\\").replace('"', '\\"')
    if escaped and not re.search(r"[\s'\"\\;]", word):
        return escaped
    return f'"{escaped}"'


def _environment(name: str, value: str) -> str:
    escaped = _specifiers(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{name}={escaped}"'


def render_unit(spec: UnitSpec, systemd_version: int | None) -> str:
    """The unit file's text. Settings newer than `systemd_version` (None: unknown) are left
    out, so the manager that reads it knows every line."""
    _check(spec)
    version = systemd_version or 0
    service = []
    if version >= TYPE_EXEC_SINCE_SYSTEMD:
        service.append("Type=exec")  # a command that cannot start fails the start, not later
    service += [
        f"ExecStart={' '.join(_exec_word(w) for w in spec.command)}",
        _environment("AGENTDECK_HOME", spec.home),
        "Environment=PYTHONUNBUFFERED=1",  # event lines reach the journal as they happen
        f"WorkingDirectory={_specifiers(spec.workspace)}",
        "Restart=always",
    ]
    if version >= BACKOFF_SINCE_SYSTEMD:
        service += [f"RestartSec={RESTART_SEC}", f"RestartSteps={RESTART_STEPS}",
                    f"RestartMaxDelaySec={RESTART_MAX_DELAY_S}"]
    else:
        service.append(f"RestartSec={OLD_RESTART_SEC}")
    service += [
        f"TimeoutStopSec={TIMEOUT_STOP_S}",
        "KillMode=mixed",  # SIGTERM to agentdeck, which stops its own tools; SIGKILL to any left
    ]
    lines = [
        "# Written by `agentdeck service install`; `agentdeck service uninstall` removes it.",
        "[Unit]",
        "Description=agentdeck: the crew, headless",
        "StartLimitIntervalSec=0",  # Restart=always means always: the backoff paces it instead
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def installed_exec_start(text: str) -> str:
    return next((ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("ExecStart=")), "")


# systemctl


def _systemctl(args: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    """`systemctl --user ARGS`, or None when there is no systemctl or it did not answer in
    time."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    try:
        return subprocess.run([exe, "--user", *args], capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, timeout=SYSTEMCTL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def systemd_version() -> int | None:
    """The installed systemd's version (`systemctl --version`: "systemd 252 (...)")."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, errors="replace",
                             stdin=subprocess.DEVNULL, timeout=SYSTEMCTL_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else None


def user_manager_reachable() -> bool:
    done = _systemctl(["is-system-running"])
    return done is not None and done.stdout.strip() in _MANAGER_STATES


def _in_default_dir(unit_dir: Path) -> bool:
    return unit_dir.absolute() == default_unit_dir().absolute()


def _why_not_managed(unit_dir: Path) -> str:
    """Why systemctl is not to be asked about the unit in `unit_dir` ("" when it is)."""
    if not _in_default_dir(unit_dir):
        return f"{unit_dir} is not the user unit directory systemd reads ({default_unit_dir()})"
    if not user_manager_reachable():
        return "no user systemd instance answered"
    return ""


def _run_or_fail(args: Sequence[str]) -> None:
    done = _systemctl(args)
    if done is None:
        raise AgentdeckError(f"systemctl --user {' '.join(args)}: no answer within {SYSTEMCTL_TIMEOUT_S:g} s")
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise AgentdeckError(f"systemctl --user {' '.join(args)} failed (exit {done.returncode})"
                             + (f": {detail[-1]}" if detail else ""))


# install, uninstall, status


def install(unit_dir: Path, text: str, *, force: bool) -> InstallResult:
    """Write the unit (refusing to replace a different one unless `force`), then reload
    and enable it when the user's systemd answers."""
    path = unit_dir / UNIT_NAME
    try:
        existing = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        existing = None
    if existing is not None and existing != text and not force:
        raise AgentdeckError(f"{path} exists and differs from the unit install would write; "
                             "--force replaces it")
    written = existing != text
    if written:
        unit_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{UNIT_NAME}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.chmod(0o644)
        os.replace(temporary, path)  # all or nothing: systemd never reads half a unit
    reason = _why_not_managed(unit_dir)
    if reason:
        # A unit outside systemd's directory is enabled by its path (systemd links it).
        unit = UNIT_NAME if _in_default_dir(unit_dir) else _exec_word(str(path))
        steps = ["systemctl --user daemon-reload", f"systemctl --user enable --now {unit}"]
        return InstallResult(str(path), written, enabled=False, manual_steps=steps, reason=reason)
    _run_or_fail(["daemon-reload"])
    _run_or_fail(["enable", UNIT_NAME])
    return InstallResult(str(path), written, enabled=True, manual_steps=[], reason="")


def uninstall(unit_dir: Path) -> UninstallResult:
    """Stop and disable the unit when the user's systemd answers, then remove the file."""
    path = unit_dir / UNIT_NAME
    if not path.exists() and not path.is_symlink():
        return UninstallResult(str(path), removed=False, disabled=False, manual_steps=[], reason="")
    reason = _why_not_managed(unit_dir)
    if not reason:
        _run_or_fail(["disable", "--now", UNIT_NAME])
    path.unlink()
    if reason:
        steps = [f"systemctl --user disable --now {UNIT_NAME}", "systemctl --user daemon-reload"]
        return UninstallResult(str(path), removed=True, disabled=False, manual_steps=steps, reason=reason)
    _run_or_fail(["daemon-reload"])
    return UninstallResult(str(path), removed=True, disabled=True, manual_steps=[], reason="")


def status(unit_dir: Path) -> ServiceStatus:
    path = unit_dir / UNIT_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = None
    reason = _why_not_managed(unit_dir)
    active = None
    if not reason:
        done = _systemctl(["is-active", UNIT_NAME])  # exits non-zero for inactive: its word is the answer
        active = done.stdout.strip() if done is not None else None
        if not active:
            reason = "systemctl --user is-active did not answer"
            active = None
    return ServiceStatus(str(path), installed=text is not None,
                         exec_start=installed_exec_start(text) if text is not None else "",
                         active=active, reason=reason)
