"""Desktop notifications: through desktop-notifier where it is installed, else
`notify-send`, and only where a desktop session is there to show them."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
from collections.abc import Mapping

from agents.notify.text import Note

SEND_TIMEOUT_S = 10.0
SESSION_VARS = ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY")


class DesktopUnavailable(Exception):
    """Why a desktop notification is not possible here (recorded as skipped)."""


def desktop_notifier_available() -> bool:
    return importlib.util.find_spec("desktop_notifier") is not None


def check_desktop(env: Mapping[str, str] | None = None) -> str:
    """How a notification would reach the desktop ("desktop-notifier", or the path of
    notify-send), or DesktopUnavailable with why not."""
    env = os.environ if env is None else env
    if not any(env.get(var) for var in SESSION_VARS):
        raise DesktopUnavailable("no desktop session "
                                 "(no DBUS_SESSION_BUS_ADDRESS, DISPLAY or WAYLAND_DISPLAY)")
    if desktop_notifier_available():
        return "desktop-notifier"
    if program := shutil.which("notify-send", path=env.get("PATH")):
        return program
    raise DesktopUnavailable("neither desktop-notifier nor notify-send is installed")


async def send_desktop(note: Note, how: str) -> None:
    """Show `note` on the desktop; raises with a one-line reason when that fails."""
    if how == "desktop-notifier":
        from desktop_notifier import DesktopNotifier  # optional: only where installed

        notifier = DesktopNotifier(app_name="agentdeck")
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await notifier.send(title=note.title, message=note.text)
        return
    # `--` so that a text starting with '-' is not taken for an option.
    proc = await asyncio.create_subprocess_exec(
        how, "--app-name=agentdeck", "--", note.title, note.text,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            _, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        line = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{how} exited {proc.returncode}" + (f": {line[0][:120]}" if line else ""))
