"""The cockpit's screenshots, from the real app (`make_app`, as the tests build it): the
crew at work on a scripted backend (streaming, the meter), an approval, the task tree.
Run by screenshots/make.py."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the scripted backend is test support

from agents.config import DEFAULT_AGENTS, parse_config  # noqa: E402
from scripted_backend import ScriptedBackend, queued  # noqa: E402
from agents.protocol import OWNER  # noqa: E402
from agents.store import Store  # noqa: E402
from agents.store import reducers as r  # noqa: E402
from app.connection import Attached, Embedded  # noqa: E402
from app.tui import make_app  # noqa: E402

SIZE = (160, 48)
ACT = json.dumps({"action": "act", "reason": "mine"})


def final(text: str) -> str:
    return json.dumps({"final": text})


async def at_work(home: Path) -> None:
    ws = home / "ws"
    ws.mkdir()
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n')
    reflect = json.dumps({"outcome": "success", "lesson": "small diffs review fast", "importance": 2,
                          "tags": []})
    outputs = {
        "dev": [ACT, final("Added the --json flag to `agentdeck messages`, with a test that decodes every "
                           "row. Ran the suite: all green. " * 4), reflect],
        "review": [ACT, final("The diff is small and tested. One note: the new flag is missing from the "
                              "README's command list. " * 4), reflect],
        "scribe": [ACT, final("Summary: dev shipped the --json flag; review asked for a README line. " * 5),
                   reflect],
    }
    backend = ScriptedBackend(queued(outputs), step_s=0.12)
    app = make_app(Embedded(home / "agentdeck.db", config, backend), home)
    async with app.run_test(size=SIZE) as pilot:
        await app.connection.ready.wait()
        for agent, text in (("dev", "add --json to messages"), ("review", "review the messages change"),
                            ("scribe", "summarise this week's changes")):
            await pilot.press(*f"@{agent} {text}", "enter")
        await pilot.pause(3.0)
        app.save_screenshot(str(HERE / "tui-crew.svg"))
        await pilot.press("ctrl+q")
    print("wrote screenshots/tui-crew.svg")


async def approval_and_tree(home: Path) -> None:
    ws = home / "ws"
    ws.mkdir()
    with Store.open(home / "agentdeck.db", list(DEFAULT_AGENTS)) as store:
        root = store.write(r.create_task, OWNER, "ship the 0.3 release", owner="lead")
        notes = store.write(r.create_task, "lead", "write the release notes", owner="scribe",
                            parent_id=root.id)
        store.write(r.set_task_status, "scribe", notes.id, "active")
        store.write(r.set_task_status, "scribe", notes.id, "done", "NOTES.md updated")
        tag = store.write(r.create_task, "lead", "tag the release", owner="dev", parent_id=root.id)
        store.write(r.set_task_status, "dev", tag.id, "active")
        store.write(r.request_approval, "dev", "run_shell", {"command": "make test && git tag v0.3"},
                    "make test && git tag v0.3 (2 commands)", "run the tests before tagging", timeout_s=600,
                    task_id=tag.id, ask_reason="a chain of commands always asks")
        expires = store.read(lambda c: c.execute("SELECT expires_at FROM approvals").fetchone()[0])
    config = parse_config(f'workspace = "{ws}"\nschedules = []\n')
    app = make_app(Attached(home / "agentdeck.db", config), home, grace_s=0.0, clock=lambda: expires - 545)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.6)
        app.save_screenshot(str(HERE / "tui-approval.svg"))
        await pilot.press("escape")
        await pilot.pause(0.3)
        await pilot.click("#task-tree")
        await pilot.press("down", "down")
        await pilot.pause(0.6)
        app.save_screenshot(str(HERE / "tui-tasks.svg"))
        await pilot.press("ctrl+q")
    print("wrote screenshots/tui-approval.svg, screenshots/tui-tasks.svg")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentdeck-tui-shots-") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        asyncio.run(at_work(Path(tmp) / "a"))
        asyncio.run(approval_and_tree(Path(tmp) / "b"))


if __name__ == "__main__":
    main()
