"""One hook run: `bash -c COMMAND` in the sandbox, the event as JSON on its stdin.

A run ends in one of: an exit status, a signal, a timeout (the process group killed), more
output than a hook may print, or output that is not UTF-8. Only the caller decides what an
outcome means (a `tool.before` hook that did anything but exit 0 or 2 denies: fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from agents.config import Config
from agents.config.schema import HookConfig
from agents.safe_text import safe_text, shorten
from agents.tools.shell import INSTALL_HINT, bwrap_argv, sandbox_settings, tool_environment

MAX_OUTPUT_BYTES = 64 * 1024  # on stdout or stderr: past it a hook is misbehaving
REASON_CHARS = 200  # of a denial's reason: one line a person reads
COMMAND_CHARS = 80  # of a hook's command where it is named in a message
RESULT_CHARS = 64 * 1024  # of a tool's result in a tool.after event


class HookEvent(msgspec.Struct, kw_only=True, omit_defaults=False):
    """What a hook reads on stdin, as one JSON object."""

    event: str  # task.created, task.done, task.failed, tool.before, tool.after, approval.*
    agent: str | None = None
    tool: str | None = None
    arguments: Any = None  # the tool call's, or the approval's
    task_id: int | None = None
    approval_id: int | None = None
    status: str | None = None  # tool.after: the call's; task.*: the task's; approval.decided: its
    result: str | None = None  # tool.after: the (redacted) output; task.done/failed: the result
    title: str | None = None  # task.*: the task's title
    ts: float = msgspec.field(default_factory=time.time)


class HookOutcome(msgspec.Struct, kw_only=True):
    """How one hook run ended."""

    command: str
    event: str
    exit_status: int | None  # None: it did not exit by itself (timed out, could not start)
    failure: str  # empty, or what went wrong: "timed out after 2 s", "exit status 1", ...
    reason: str  # the first line of its stderr, made safe and shortened
    duration_s: float
    denies: bool  # for tool.before: the call must not run
    message: str  # said plainly, for the log, the tool result and `agentdeck hooks test`


def matching(hooks: Iterable[HookConfig], event: str, agent: str | None,
             tool: str | None) -> list[HookConfig]:
    """The hooks for this event: an agent or tool match, where given, must be exact."""
    return [h for h in hooks if h.event == event and (not h.agent or h.agent == agent)
            and (not h.tool or h.tool == tool)]


def named(command: str) -> str:
    return safe_text(shorten(" ".join(command.split()), COMMAND_CHARS))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _exit_failure(status: int, sandboxed: bool) -> str:
    if status < 0:
        return f"killed by {_signal_name(-status)}"
    if sandboxed and status > 128:  # the sandbox reports a signalled command as 128 + N
        return f"exit status {status}: killed by {_signal_name(status - 128)}"
    return f"exit status {status}"


def outcome_for(hook: HookConfig, event: str, status: int | None, failure: str, stderr: bytes,
                duration_s: float) -> HookOutcome:
    """Judge one run. Exit 0 allows; exit 2 denies with its stderr's first line as the
    reason; anything else (and any failure) is a failed hook, which denies a tool.before."""
    reason = ""
    if not failure:
        first = next((ln.strip() for ln in stderr.decode().splitlines() if ln.strip()), "")
        reason = safe_text(shorten(first, REASON_CHARS))
        if status not in (0, 2):
            failure = _exit_failure(status or 0, sandboxed=True)
    who = f"hook `{named(hook.command)}`"
    if failure:
        message = f"{who} failed ({failure})" + (": denied" if event == "tool.before" else "")
        if reason:
            message += f"; it said: {reason}"
    elif status == 2 and event == "tool.before":
        message = f"denied by {who}: {reason or 'no reason given'}"
    else:
        message = f"{who} exited {status}"
    denies = event == "tool.before" and (bool(failure) or status == 2)
    return HookOutcome(command=hook.command, event=event, exit_status=status, failure=failure, reason=reason,
                       duration_s=round(duration_s, 3), denies=denies, message=message)


def hook_argv(config: Config, home: Path, workspace: Path, command: str, writable: bool) -> list[str]:
    """bash -c COMMAND, inside bubblewrap where the config's sandbox has it: no network, the
    homes hidden as for run_shell, the workspace writable only where `writable`."""
    argv = ["bash", "-c", command]
    if config.sandbox == "off":
        return argv
    settings = sandbox_settings(config.sandbox, False, hide_homes=config.sandbox_hide_homes,
                                hide=config.sandbox_hide, show=config.sandbox_show)
    if settings.bwrap is None:
        if config.sandbox == "bwrap":
            raise OSError(f'sandbox = "bwrap" but bwrap cannot run here; {INSTALL_HINT}')
        return argv
    return bwrap_argv(settings.bwrap, workspace, home, False, settings.hide, settings.show,
                      workspace_writable=writable) + argv


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader, over: asyncio.Event) -> bytes:
    """The stream up to MAX_OUTPUT_BYTES; one byte more sets `over` and stops reading."""
    data = bytearray()
    while chunk := await stream.read(65536):
        data += chunk
        if len(data) > MAX_OUTPUT_BYTES:
            over.set()
            break
    return bytes(data[:MAX_OUTPUT_BYTES])


async def run_hook(hook: HookConfig, event: HookEvent, config: Config, home: Path, workspace: Path,
                   *, env: Mapping[str, str] | None = None) -> HookOutcome:
    """Run one hook on `event` and judge it. Never raises but for cancellation (which kills
    the hook's process group)."""
    started = time.monotonic()
    writable = event.event != "tool.before"  # a hook that judges a call does not change files
    try:
        argv = await asyncio.to_thread(hook_argv, config, home, workspace, hook.command, writable)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=workspace, env=tool_environment({"AGENTDECK_HOOK_EVENT": event.event, **(env or {})}),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as err:
        return outcome_for(hook, event.event, None, f"could not start: {err}", b"",
                           time.monotonic() - started)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    over = asyncio.Event()
    readers = [asyncio.create_task(_read_capped(s, over)) for s in (proc.stdout, proc.stderr)]
    failure = ""
    try:
        async with asyncio.timeout(hook.timeout_s):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it need not read
                proc.stdin.write(msgspec.json.encode(event))
                await proc.stdin.drain()
                proc.stdin.close()
            over_watch = asyncio.create_task(over.wait())
            exited = asyncio.create_task(proc.wait())
            try:
                await asyncio.wait({over_watch, exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                over_watch.cancel()
                exited.cancel()
            if over.is_set():
                failure = f"printed more than {MAX_OUTPUT_BYTES // 1024} KB"
            else:
                # A background child holding its output open must not hold the hook past its timeout.
                await asyncio.wait(readers)
    except TimeoutError:
        failure = f"timed out after {hook.timeout_s:g} s"
    except BaseException:  # cancelled: never leave the hook running
        _kill_group(proc.pid)
        for reader in readers:
            reader.cancel()
        raise
    finally:
        _kill_group(proc.pid)  # the whole group; in the sandbox, its pid 1 takes the rest along
    status = await proc.wait()
    for reader in readers:
        reader.cancel()
    outputs = [r.result() if r.done() and not r.cancelled() else b"" for r in readers]
    if not failure and over.is_set():
        failure = f"printed more than {MAX_OUTPUT_BYTES // 1024} KB"
    if not failure:
        for name, data in zip(("stdout", "stderr"), outputs, strict=True):
            try:
                data.decode()
            except UnicodeDecodeError:
                failure = f"printed bytes that are not UTF-8 on {name}"
                break
    return outcome_for(hook, event.event, None if failure and status < 0 else status, failure,
                       outputs[1] if not failure else b"", time.monotonic() - started)
