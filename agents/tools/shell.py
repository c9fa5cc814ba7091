"""run_shell: `bash -c` in the workspace, in its own process group, under bubblewrap.

Without a terminal (stdin is /dev/null), with a timeout that kills the whole process group
and an output cap. Where bubblewrap is available every command runs inside it: the
workspace read-write, the rest of the filesystem read-only, agentdeck's home and every
home directory (other users', the person's own: ~/.ssh, ~/.aws, keyrings) hidden under an
empty tmpfs unless the workspace lies there, a private /tmp, no network unless the
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


def sandbox_settings(mode: str, network: bool = False, *, hide_homes: bool = True,
                     hide: Iterable[str] = (), show: Iterable[str] = ()) -> SandboxSettings:
    return SandboxSettings(mode=mode, bwrap=None if mode == "off" else find_bwrap(), network=network,
                           hide=hidden_paths(hide_homes, hide), show=_real_dirs(show))


def _real_dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """Existing paths, `~` expanded and links resolved (a tmpfs needs a real mount point)."""
    found = {real_path(os.path.expanduser(p)) for p in paths}
    return tuple(sorted(str(p) for p in found if p.exists() and p != Path("/")))


def hidden_paths(hide_homes: bool, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """What the sandbox hides: with `hide_homes`, /home, /root, the person's own home and
    every login user's home; plus the configured paths."""
    paths = list(extra)
    if hide_homes:
        paths += ["/home", "/root", os.path.expanduser("~")]
        # Login users only: system accounts have homes such as / or /bin.
        paths += [u.pw_dir for u in pwd.getpwall() if u.pw_uid >= 1000 and u.pw_dir.count("/") >= 2]
    return _real_dirs(paths)


def tool_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: nothing of agentdeck's own, plus the configured tool_env."""
    env = {
        "PATH": PATH, "LANG": "C.UTF-8", "TERM": "dumb", "HOME": os.path.expanduser("~"),
        "NO_COLOR": "1", "GIT_TERMINAL_PROMPT": "0", "PAGER": "cat", "GIT_PAGER": "cat",
    }
    env.update(extra)
    return env


def bwrap_argv(bwrap: str, workspace: Path, home: Path, network: bool, hide: Iterable[str] = (),
               show: Iterable[str] = ()) -> list[str]:
    """Mounts in order of depth, so a deeper one lies over a shallower one: the workspace
    stays writable inside a hidden home directory, and agentdeck's home stays hidden
    wherever it lies (a shown path never uncovers it)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    ws, own = real_path(workspace), real_path(home)
    # (path, kind, rank): at equal depth a hide goes first and agentdeck's home last.
    mounts = [(Path(p), "--tmpfs", 0) for p in hide if Path(p) != ws]
    mounts += [(Path(p), "--ro-bind", 1) for p in show
               if not Path(p).is_relative_to(ws) and not Path(p).is_relative_to(own)]
    mounts += [(ws, "--bind", 2), (own, "--tmpfs", 3)]
    for path, kind, _ in sorted(mounts, key=lambda m: (len(m[0].parts), m[2])):
        argv += [kind, str(path)] + ([] if kind == "--tmpfs" else [str(path)])
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--chdir", str(real_path(workspace)), "--"]
    return argv


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
            argv = bwrap_argv(sandbox.bwrap, ctx.workspace, ctx.home, sandbox.network, sandbox.hide,
                              sandbox.show) + argv
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
