"""run_shell in real bubblewrap: an approved command still cannot leave the workspace.

Each test runs commands as if a person had said yes (the tool itself, after the gate).
Skipped, with the reason shown, only where bwrap is truly absent or cannot run; under CI
(the CI variable set) a missing bwrap fails them instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import agentdeck_cmd, subprocess_env

from agents.config import default_config, parse_config
from agents.errors import ConfigError
from agents.tools import TOOLS, invoke
from agents.tools import shell as shell_module
from agents.tools.base import SandboxSettings, ToolContext, ToolResult
from agents.tools.shell import bwrap_argv, find_bwrap, hidden_paths, sandbox_settings, workspace_interpreters

BWRAP = find_bwrap()
MISSING = "bubblewrap (bwrap) is not installed or cannot create a sandbox here; `apt install bubblewrap`"
CI = bool(os.environ.get("CI"))
needs_bwrap = pytest.mark.skipif(BWRAP is None and not CI, reason=MISSING)


def require_bwrap() -> None:
    """Under CI a missing bwrap fails the test: a sandbox test must never pass unrun, nor
    run its commands unsandboxed."""
    if BWRAP is None:
        pytest.fail(MISSING)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    ws, home, outside = tmp_path / "ws", tmp_path / "home", tmp_path / "outside"
    for d in (ws, home, outside):
        d.mkdir()
    (home / "agentdeck.db").write_text("SECRET-DATABASE-BYTES")
    (outside / "keep.txt").write_text("keep me")
    return {"ws": ws, "home": home, "outside": outside}


def shell(places: dict[str, Path], command: str, *, network: bool = False, mode: str = "auto",
          timeout_s: float | None = None, home: Path | None = None, env: dict[str, str] | None = None,
          sandbox: SandboxSettings | None = None) -> ToolResult:
    if mode != "off":
        require_bwrap()
    ctx = ToolContext(agent="dev", workspace=places["ws"], home=home or places["home"], store=None,  # type: ignore[arg-type]
                      env=env or {}, sandbox=sandbox or SandboxSettings(mode=mode, bwrap=BWRAP, network=network))
    args: dict[str, object] = {"command": command}
    if timeout_s is not None:
        args["timeout_s"] = timeout_s
    result, _ = asyncio.run(invoke(TOOLS["run_shell"], ctx, args))
    return result


@needs_bwrap
def test_an_approved_command_cannot_write_outside_the_workspace(places: dict[str, Path]) -> None:
    out = places["outside"]
    result = shell(places, f"echo inside > made.txt; echo x > {out}/new.txt; rm -rf {out}; "
                   "touch /etc/agentdeck-was-here; rm -rf ~ 2>&1 | head -1; echo done")
    assert result.status == "ok" and "done" in result.text
    assert (places["ws"] / "made.txt").read_text() == "inside\n"
    assert (out / "keep.txt").read_text() == "keep me" and not (out / "new.txt").exists()
    assert not Path("/etc/agentdeck-was-here").exists()
    assert "Read-only file system" in result.text


@needs_bwrap
@pytest.mark.parametrize("inside", [False, True], ids=["home-elsewhere", "home-inside-workspace"])
def test_an_approved_command_cannot_read_agentdecks_home(places: dict[str, Path], inside: bool) -> None:
    home = places["home"]
    if inside:
        home = places["ws"] / ".agentdeck"
        home.mkdir()
        (home / "agentdeck.db").write_text("SECRET-DATABASE-BYTES")
    result = shell(places, f"cat {home}/agentdeck.db; ls -A {home} | wc -l; grep -r SECRET {places['ws']} "
                   "| wc -l", home=home)
    assert "SECRET-DATABASE-BYTES" not in result.text
    assert result.text.splitlines()[-3:-1] == ["0", "0"]  # empty, and not found through the workspace


class Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@needs_bwrap
def test_no_network_unless_the_agents_config_allows_it(places: dict[str, Path]) -> None:
    listener = Listener()
    try:
        probe = f"(exec 3<>/dev/tcp/127.0.0.1/{listener.port}) 2>/dev/null && echo connected || echo refused"
        assert "refused" in shell(places, probe).text
        assert listener.accepted == 0
        # The same command with network allowed reaches it: the probe itself works.
        assert "connected" in shell(places, probe, network=True).text
        assert listener.accepted == 1
    finally:
        listener.close()


def _sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.mark.parametrize("mode", [pytest.param("auto", marks=needs_bwrap), "off"])
def test_a_timeout_kills_the_command_and_its_children(places: dict[str, Path], mode: str) -> None:
    marker = f"1{int(time.time() * 1000) % 100000}.25"
    started = time.monotonic()
    result = shell(places, f"sleep {marker} & (sleep {marker}; true) & sleep {marker}", mode=mode,
                   timeout_s=1)
    assert result.status == "timeout" and "killed with its children" in result.text
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 5
    while _sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers(marker) == []


@needs_bwrap
def test_the_environment_is_minimal_plus_tool_env(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTDECK_LEAK_CHECK", "should-not-pass")
    result = shell(places, "env", env={"PROJECT_FLAG": "on"})
    assert "PROJECT_FLAG=on" in result.text
    assert "AGENTDECK" not in result.text
    assert "should-not-pass" not in result.text


def test_sandbox_bwrap_without_bwrap_refuses_to_run(places: dict[str, Path]) -> None:
    ctx = ToolContext(agent="dev", workspace=places["ws"], home=places["home"], store=None,  # type: ignore[arg-type]
                      sandbox=SandboxSettings(mode="bwrap", bwrap=None))
    result, _ = asyncio.run(invoke(TOOLS["run_shell"], ctx, {"command": "echo hi > x"}))
    assert result.status == "error" and "apt install bubblewrap" in result.text
    assert not (places["ws"] / "x").exists()


def test_output_is_capped_head_and_tail(places: dict[str, Path]) -> None:
    result = shell(places, "seq 1 200000", mode="off")
    assert result.truncated and result.text.startswith("1\n2\n")
    assert "characters omitted" in result.text and "200000" in result.text


# --- homes hidden; interpreters allowed on workspace files ---


@pytest.fixture
def user_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The invoking user's home, outside the workspace, with what an agent must not read.
    Not under /tmp, which the sandbox replaces anyway."""
    top = Path(tempfile.mkdtemp(prefix="agentdeck-test-", dir="/var/tmp"))
    home = top / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE-KEY-BYTES")
    (home / ".toolchain").mkdir()
    (home / ".toolchain" / "VERSION").write_text("toolchain 1.0")
    (top / "elsewhere").mkdir()
    (top / "elsewhere" / "keep.txt").write_text("keep me")
    monkeypatch.setenv("HOME", str(home))
    yield home
    shutil.rmtree(top)


@needs_bwrap
def test_home_directories_are_hidden_but_the_workspace_is_not(places: dict[str, Path], user_home: Path) -> None:
    (places["ws"] / "notes.txt").write_text("workspace notes")
    sandbox = sandbox_settings("auto", hide_homes=True, show=["~/.toolchain"])
    assert str(user_home.resolve()) in sandbox.hide and "/root" in sandbox.hide
    result = shell(places, f"cat notes.txt; cat {user_home}/.ssh/id_ed25519; ls -A {user_home}/.ssh | wc -l; "
                   f"cat {user_home}/.toolchain/VERSION; ls -A /root | wc -l", sandbox=sandbox)
    assert "workspace notes" in result.text and "toolchain 1.0" in result.text
    assert "PRIVATE-KEY-BYTES" not in result.text
    assert result.text.splitlines()[2] == "0"  # ~/.ssh is not there at all
    # Off: the same home is readable (the file is really there to be hidden).
    shown = shell(places, f"cat {user_home}/.ssh/id_ed25519", sandbox=sandbox_settings("auto", hide_homes=False))
    assert "PRIVATE-KEY-BYTES" in shown.text


@needs_bwrap
def test_a_workspace_inside_a_hidden_home_stays_writable(places: dict[str, Path], user_home: Path) -> None:
    ws = user_home / "project"
    ws.mkdir()
    inside = {**places, "ws": ws}
    hidden = user_home.parent / "elsewhere"
    sandbox = sandbox_settings("auto", hide=[str(hidden)])
    result = shell(inside, f"echo made > made.txt; cat {user_home}/.ssh/id_ed25519; cat {hidden}/keep.txt; "
                   "echo done", sandbox=sandbox)
    assert "done" in result.text and (ws / "made.txt").read_text() == "made\n"
    assert "PRIVATE-KEY-BYTES" not in result.text and "keep me" not in result.text


def _check(home: Path, command: str) -> dict:
    require_bwrap()
    proc = subprocess.run(agentdeck_cmd("policy", "check", "dev", "run_shell", json.dumps({"command": command}),
                                        "--json"), env=subprocess_env(home), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_bwrap
@pytest.mark.timeout(60)
def test_an_interpreter_running_a_workspace_file_may_be_allowed_in_the_sandbox(places: dict[str, Path]) -> None:
    home, ws = places["ws"].parent / "agentdeck-home", places["ws"]
    home.mkdir()
    (ws / "tools").mkdir()
    (ws / "tools" / "x.py").write_text("print('hi')\n")
    (places["outside"] / "y.py").write_text("print('out')\n")
    rule = '[[rules]]\nagent = "dev"\ntool = "run_shell"\npattern = "python3"\ndecision = "allow"\n'
    (home / "config.toml").write_text(f'workspace = "{ws}"\n{rule}')
    allowed = _check(home, "python3 tools/x.py --fast")
    assert allowed["decision"] == "allow" and "python3" in allowed["rule"]
    for command in ("python3 -c 'print(1)'", "python3 -", "python3", f"python3 {places['outside']}/y.py",
                    "python3 tools/missing.py"):
        asked = _check(home, command)
        assert asked["decision"] == "ask" and asked["always_rule"] is None, command
    # No rule yet: it asks, and `always` offers the interpreter and the script.
    (home / "config.toml").write_text(f'workspace = "{ws}"\n')
    asked = _check(home, "python3 tools/x.py --fast")
    assert asked["decision"] == "ask" and asked["always_rule"] == "python3 tools/x.py"
    # Unsandboxed, the same rule never matches an interpreter.
    (home / "config.toml").write_text(f'workspace = "{ws}"\nsandbox = "off"\n{rule}')
    unsandboxed = _check(home, "python3 tools/x.py")
    assert unsandboxed["decision"] == "ask" and "sandbox" in unsandboxed["reason"]
    assert unsandboxed["always_rule"] is None


# --- toolchains under a hidden home still run; secrets beside them stay hidden ---


@needs_bwrap
@pytest.mark.timeout(120)
def test_a_workspace_virtualenv_runs_inside_the_sandbox(places: dict[str, Path]) -> None:
    """`.venv/bin/python` links to a base Python that may live under a home (pyenv, uv):
    hiding homes must not break `make test` in such a workspace."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(places["ws"] / ".venv")],
                   check=True, timeout=60, capture_output=True)
    program = ".venv/bin/python -c 'print(6*7)'"
    # As the gate builds it: agentdeck's own interpreter shown, and the venv's base.
    assert shell(places, program, sandbox=sandbox_settings("auto")).text == "42\n[exit status 0]"
    # From pyvenv.cfg alone, with nothing configured shown.
    bare = SandboxSettings(mode="auto", bwrap=BWRAP, hide=hidden_paths(True))
    assert shell(places, program, sandbox=bare).text == "42\n[exit status 0]"
    base = Path(os.path.realpath(sys.executable)).parent.parent
    assert workspace_interpreters(places["ws"]) == (str(base),)


@needs_bwrap
def test_the_default_toolchain_dirs_show_but_secrets_beside_them_do_not(places: dict[str, Path],
                                                                         user_home: Path) -> None:
    (user_home / ".ssh" / "id_test").write_text("TEST-KEY-BYTES")
    tool = user_home / ".pyenv" / "versions" / "9.9" / "bin"
    tool.mkdir(parents=True)
    (tool / "VERSION").write_text("pyenv 9.9")
    # Shown paths that would uncover the secrets, handed past the config check: dropped.
    sandbox = sandbox_settings("auto", show=[*default_config().sandbox_show, "~/.ssh", "~"])
    argv = bwrap_argv("bwrap", places["ws"], places["home"], False, sandbox.hide, sandbox.show)
    bound = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--ro-bind"}
    real = user_home.resolve()
    assert str(real / ".pyenv" / "versions") in bound
    assert str(real) not in bound and str(real / ".ssh") not in bound
    result = shell(places, f"cat {tool}/VERSION; cat {user_home}/.ssh/id_test; ls -A {user_home}/.ssh | wc -l; "
                   f"ls -A {user_home}", sandbox=sandbox)
    assert "pyenv 9.9" in result.text
    assert "TEST-KEY-BYTES" not in result.text and "PRIVATE-KEY-BYTES" not in result.text
    assert result.text.splitlines()[2] == "0"  # ~/.ssh is not there at all
    assert result.text.splitlines()[3:-1] == [".pyenv"]  # nothing of the home but the toolchain


@pytest.mark.parametrize("path", ["~/.ssh", "~", "~/.config/gh", "~/.cargo", "~/.local"])
def test_showing_a_secret_is_a_config_error(path: str) -> None:
    with pytest.raises(ConfigError, match=r"sandbox_show\[0\]: .* would show .* to commands") as err:
        parse_config(f'sandbox_show = ["{path}"]\n')
    assert "\n" not in str(err.value)
    assert parse_config('sandbox_show = ["~/.cargo/bin", "~/.local/bin"]\n').sandbox_show == ["~/.cargo/bin",
                                                                                             "~/.local/bin"]


def test_a_secret_show_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "agentdeck-home"
    home.mkdir()
    (home / "config.toml").write_text('sandbox_show = ["~/.ssh"]\n')
    proc = subprocess.run(agentdeck_cmd("policy", "check", "dev", "run_shell", '{"command": "true"}'),
                          env=subprocess_env(home), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "sandbox_show[0]: '~/.ssh' would show" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_login_homes_are_read_once_not_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = pwd.getpwall
    monkeypatch.setattr(pwd, "getpwall", lambda: calls.append(1) or real())
    shell_module._login_homes.cache_clear()
    try:
        for _ in range(3):
            hidden_paths(True)
            sandbox_settings("off")
        assert len(calls) == 1
    finally:
        shell_module._login_homes.cache_clear()
