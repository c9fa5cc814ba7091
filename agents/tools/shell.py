"""run_shell: `bash -c` in the workspace, in its own process group, under bubblewrap.

Without a terminal (stdin is /dev/null), with a timeout that kills the whole process group
and an output cap. Where bubblewrap is available every command runs inside it: the
workspace read-write, the rest of the filesystem read-only, agentdeck's home and every
home directory (other users', the person's own: ~/.ssh, ~/.aws, keyrings) hidden under an
empty tmpfs unless the workspace lies there (toolchains in them, such as a pyenv Python,
shown back read-only; secrets never), a private /tmp, no network unless the
agent's config allows it, a fresh pid namespace (so killing the sandbox kills everything
in it), and it dies with its parent. A person's yes approves a command, not an escape from the workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from agents.policy.paths import real_path
from agents.tools.base import SandboxSettings, Tool, ToolContext, ToolError, ToolTimeout

DEFAULT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 600.0
KEEP_BYTES = 256 * 1024  # of output: the first and the last this many bytes are kept
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALL_HINT = "install bubblewrap: `apt install bubblewrap` or `dnf install bubblewrap`"


class ShellArgs(msgspec.Struct, forbid_unknown_fields=True):
    command: str
    timeout_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMEOUT_S)] | None = None  # 0: the default


@functools.cache
def find_bwrap() -> str | None:
    """The bwrap binary, if it is installed and can build a sandbox here (user
    namespaces may be disabled, or a container may forbid them)."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    try:
        probe = subprocess.run(
            [path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
             "--unshare-net", "--die-with-parent", "true"],
            capture_output=True, timeout=10, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return path if probe.returncode == 0 else None


# Under a home, what no command may read even where a toolchain directory is shown:
# keys, cloud and registry credentials, keyrings, per-user config.
SECRET_DIRS = (".ssh", ".aws", ".gnupg", ".config", ".local/share/keyrings", ".password-store",
               ".cargo/credentials", ".cargo/credentials.toml", ".docker", ".kube", ".netrc",
               ".git-credentials", ".pypirc", ".npmrc")
VENV_DIRS = (".venv", "venv")


def sandbox_settings(mode: str, network: bool = False, *, hide_homes: bool = True,
                     hide: Iterable[str] = (), show: Iterable[str] = ()) -> SandboxSettings:
    return SandboxSettings(mode=mode, bwrap=None if mode == "off" else find_bwrap(), network=network,
                           hide=hidden_paths(hide_homes, hide), show=_real_dirs([*show, *_own_interpreter()]))


def _real_dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """Existing paths, `~` expanded and links resolved (a tmpfs needs a real mount point)."""
    found = {real_path(os.path.expanduser(p)) for p in paths}
    return tuple(sorted(str(p) for p in found if p.exists() and p != Path("/")))


@functools.cache
def _login_homes() -> tuple[str, ...]:
    """Every login user's home (system accounts have homes such as / or /bin). Cached:
    getpwall reads the whole user database, and this runs on every tool call."""
    return _real_dirs(u.pw_dir for u in pwd.getpwall() if u.pw_uid >= 1000 and u.pw_dir.count("/") >= 2)


def hidden_paths(hide_homes: bool, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """What the sandbox hides: with `hide_homes`, /home, /root, the person's own home and
    every login user's home; plus the configured paths."""
    paths = list(extra)
    if hide_homes:
        paths += ["/home", "/root", os.path.expanduser("~"), *_login_homes()]
    return _real_dirs(paths)


def secret_in(path: str | os.PathLike[str]) -> str | None:
    """The secret a shown `path` would uncover: a whole home directory it is or contains,
    or a SECRET_DIRS entry it is, lies in or contains. None where it is safe to show."""
    p = real_path(os.path.expanduser(path))
    for home in ("/home", "/root", os.path.expanduser("~"), *_login_homes()):
        if real_path(home).is_relative_to(p):
            return str(real_path(home))
    for i in range(1, len(p.parts) + 1):
        top = Path(*p.parts[:i])
        for secret in SECRET_DIRS:
            under = top / secret
            # In one, or containing one: below an ancestor always; below `path` itself
            # only where it is there (an unknown home, say).
            if p.is_relative_to(under) or (under.is_relative_to(p) and (top != p or under.exists())):
                return str(under)
    return None


def _prefix(interpreter: Path) -> Path:
    """The installation an interpreter belongs to: /x/versions/3.11.7 for .../bin/python3."""
    found = real_path(interpreter)
    return found.parent.parent if found.parent.name == "bin" else found.parent


@functools.cache
def _own_interpreter() -> tuple[str, ...]:
    """agentdeck's own base Python (a pyenv one under /root, say): what `python3 -m
    venv` from it, and a venv made so, need inside the sandbox."""
    return _real_dirs([sys.base_prefix])


def workspace_interpreters(workspace: Path) -> tuple[str, ...]:
    """The base installation of each virtualenv in the workspace (from the `home = `
    line of its pyvenv.cfg): `.venv/bin/python` is a link into it."""
    found = []
    for name in VENV_DIRS:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            cfg = (workspace / name / "pyvenv.cfg").read_text()[:65536]
            homes = [v.strip() for k, _, v in (line.partition("=") for line in cfg.splitlines())
                     if k.strip() == "home" and v.strip()]
            if homes and os.path.isabs(homes[0]):
                bin_dir = Path(homes[0])
                exe = next((bin_dir / n for n in ("python3", "python") if (bin_dir / n).exists()), None)
                found.append(str(_prefix(exe) if exe else real_path(bin_dir).parent))
    return _real_dirs(found)


def tool_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: nothing of agentdeck's own, plus the configured tool_env."""
    env = {
        "PATH": PATH, "LANG": "C.UTF-8", "TERM": "dumb", "HOME": os.path.expanduser("~"),
        "NO_COLOR": "1", "GIT_TERMINAL_PROMPT": "0", "PAGER": "cat", "GIT_PAGER": "cat",
    }
    env.update(extra)
    return env


def bwrap_argv(bwrap: str, workspace: Path, home: Path, network: bool, hide: Iterable[str] = (),
               show: Iterable[str] = (), *, workspace_writable: bool = True) -> list[str]:
    """Mounts in order of depth, so a deeper one lies over a shallower one: the workspace
    stays writable (read-only with `workspace_writable=False`: an MCP server without
    workspace_write) inside a hidden home directory, and agentdeck's home stays hidden
    wherever it lies (a shown path never uncovers it). A shown path is bound only where
    it lies in a hidden one and uncovers no secret (`secret_in`)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    ws, own = real_path(workspace), real_path(home)
    # (path, kind, rank): at equal depth a hide goes first and agentdeck's home last.
    mounts = [(Path(p), "--tmpfs", 0) for p in hide if Path(p) != ws]
    hidden = [Path(h) for h in hide] + [Path("/tmp")]  # /tmp is a private tmpfs too
    mounts += [(Path(p), "--ro-bind", 1) for p in dict.fromkeys(show)
               if not Path(p).is_relative_to(ws) and not Path(p).is_relative_to(own)
               and any(Path(p).is_relative_to(h) for h in hidden) and secret_in(p) is None]
    mounts += [(ws, "--bind" if workspace_writable else "--ro-bind", 2), (own, "--tmpfs", 3)]
    for path, kind, _ in sorted(mounts, key=lambda m: (len(m[0].parts), m[2])):
        argv += [kind, str(path)] + ([] if kind == "--tmpfs" else [str(path)])
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--chdir", str(real_path(workspace)), "--"]
    return argv


def _sandbox_argv(bwrap: str, ctx: ToolContext) -> list[str]:
    show = [*ctx.sandbox.show, *workspace_interpreters(ctx.workspace)]
    return bwrap_argv(bwrap, ctx.workspace, ctx.home, ctx.sandbox.network, ctx.sandbox.hide, show)


async def _read_capped(stream: asyncio.StreamReader) -> tuple[bytes, int]:
    """(the first and last KEEP_BYTES of the output, total bytes)."""
    head = bytearray()
    tail = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(head) < KEEP_BYTES:
            take = KEEP_BYTES - len(head)
            head += chunk[:take]
            chunk = chunk[take:]
        if chunk:
            tail += chunk
            del tail[:-KEEP_BYTES]
    if tail:
        skipped = total - len(head) - len(tail)
        marker = f"\n[… {skipped} bytes omitted …]\n".encode() if skipped else b""
        return bytes(head) + marker + bytes(tail), total
    return bytes(head), total


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_shell(ctx: ToolContext, args: ShellArgs) -> str:
    if not args.command.strip():
        raise ToolError("run_shell: empty command")
    timeout = min(max(args.timeout_s or DEFAULT_TIMEOUT_S, 1.0), MAX_TIMEOUT_S)
    sandbox = ctx.sandbox
    argv = ["bash", "-c", args.command]
    if sandbox.mode != "off":
        if sandbox.bwrap is None:
            if sandbox.mode == "bwrap":
                raise ToolError(f"run_shell: sandbox = \"bwrap\" but bwrap cannot run here; {INSTALL_HINT}")
        else:
            # Off the loop: it reads the workspace's pyvenv.cfg (a venv made during the
            # session counts too) and checks each shown path for secrets.
            argv = await asyncio.to_thread(_sandbox_argv, sandbox.bwrap, ctx) + argv
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ctx.workspace, env=tool_environment(ctx.env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    assert proc.stdout is not None
    reader = asyncio.create_task(_read_capped(proc.stdout))
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        _kill_group(proc.pid)  # the whole group; in the sandbox, pid 1 takes the rest with it
        await proc.wait()
        output, _ = await reader
        text = output.decode("utf-8", "replace")
        raise ToolTimeout(f"{text}\n[timed out after {timeout:g} s; killed with its children]") from None
    except BaseException:  # cancelled: never leave the command running
        _kill_group(proc.pid)
        reader.cancel()
        raise
    # A background child that kept stdout open must not hold the call: its group goes.
    try:
        output, _ = await asyncio.wait_for(reader, 2.0)
    except TimeoutError:
        _kill_group(proc.pid)
        output, _ = await reader
    _kill_group(proc.pid)
    text = output.decode("utf-8", "replace").rstrip("\n")
    return f"{text}\n[exit status {proc.returncode}]" if text else f"[exit status {proc.returncode}]"


SHELL_TOOLS = [
    Tool("run_shell", "Run a bash command in the workspace (sandboxed; no terminal).", ShellArgs,
         "exec", run_shell, timeout_s=MAX_TIMEOUT_S),
]
