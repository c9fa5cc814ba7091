"""One git command, run as an asyncio subprocess with a deadline: killed when it runs past
it or when its caller is cancelled (a task stopped, SIGTERM), so nothing outlives the call.

Every command sees only the environment given here: no system or global git config (a
person's hooks, `core.autocrlf` or aliases must not change what a checkpoint records), no
pager, no prompt, paths taken literally (a file named `*` is that file, not a glob)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from agents.errors import AgentdeckError

GIT_TIMEOUT_S = 120.0  # a first snapshot of a 100k-file tree hashes every file once
OUTPUT_CAP = 256 * 1024 * 1024  # what one command may print (a diff is capped far below)


class GitError(AgentdeckError):
    """A git command failed, timed out or is missing; the message is one line."""


def git_environment(extra: Mapping[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    return keep | {
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "HOME": os.devnull,
        "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_OPTIONAL_LOCKS": "0",
        "GIT_AUTHOR_NAME": "agentdeck", "GIT_AUTHOR_EMAIL": "agentdeck@localhost",
        "GIT_COMMITTER_NAME": "agentdeck", "GIT_COMMITTER_EMAIL": "agentdeck@localhost",
    } | dict(extra)


async def run_git(args: list[str], *, env: Mapping[str, str], cwd: Path, stdin: bytes | None = None,
                  timeout_s: float = GIT_TIMEOUT_S, ok: tuple[int, ...] = (0,)) -> bytes:
    """git's stdout; GitError naming the command and git's first error line otherwise."""
    what = f"git {args[0]}"
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=cwd, env=git_environment(env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=OUTPUT_CAP)
    except FileNotFoundError:
        raise GitError("git is not installed: checkpoints and undo need it") from None
    except OSError as err:
        raise GitError(f"{what}: cannot start: {err.strerror or err}") from None
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(stdin)
    except BaseException as cause:  # timeout or cancellation: never leave it running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        if isinstance(cause, TimeoutError):
            raise GitError(f"{what}: no answer in {timeout_s:.0f} s") from None
        raise
    if proc.returncode not in ok:
        first = next((ln for ln in err.decode(errors="replace").splitlines() if ln.strip()), "")
        raise GitError(f"{what} failed (exit {proc.returncode}): {first.strip()[:300]}")
    return out
