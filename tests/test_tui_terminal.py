"""The real `agentdeck` in a real terminal (tmux) with the real model, and `attach`:
the TUI in one process deciding an approval for a headless instance in another."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import AGENTS, agentdeck_cmd, model_work, subprocess_env

from agents.config import parse_config
from agents.crew import rules
from agents.protocol import OWNER
from agents.safe_text import shorten
from agents.store import Store, queries
from agents.store import reducers as r
from app.connection import Attached
from app.tui import make_app
from widgets.approval import ApprovalModal

TMUX = shutil.which("tmux")


def tmux(*args: str) -> str:
    """tmux on a server of the test's own (never the user's)."""
    return subprocess.run(["tmux", "-L", "agentdeck-test", "-f", "/dev/null", *args], capture_output=True,
                          text=True, timeout=10).stdout


def screen_until(session: str, check, within: float) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    shown = ""
    while time.monotonic() < deadline:
        shown = tmux("capture-pane", "-p", "-t", session)
        if check(shown):
            return shown
        time.sleep(0.5)
    raise AssertionError(f"never shown; the screen:\n{shown}")


# A question for ops that the rules answer nothing of: what the cockpit shows of it is the model's work.
MODEL_ONLY_ASK = "Which programs are running right now?"


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
@pytest.mark.timeout(420)
def test_agentdeck_in_tmux_with_the_real_model(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (home / "config.toml").write_text(f'workspace = "{ws}"\nschedules = []\ndefer_s = 1\n')
    session = f"agentdeck-test-{tmp_path.name}"[:60]
    env = subprocess_env(home)
    command = " ".join(f"'{part}'" for part in agentdeck_cmd())
    exports = " ".join(f"{k}='{env[k]}'" for k in ("AGENTDECK_HOME", "PATH") if k in env)
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "48", f"env -u COLUMNS -u LINES {exports} {command}; sleep 60")
    tmux("resize-window", "-t", session, "-x", "160", "-y", "48")
    tools = parse_config("").agents["ops"].tools
    try:
        screen_until(session, lambda s: all(f"{a}  " in s for a in AGENTS) and "slots 0/5" in s, 120)
        tmux("send-keys", "-t", session, f"@ops {MODEL_ONLY_ASK}", "Enter")
        # The task tree shows it ending; only the model's triage and steps can end it done.
        ended = screen_until(session, lambda s: "#1 done ops: Which programs" in s or "#1 failed ops:" in s, 300)
        assert "#1 done ops: Which programs" in ended, ended
        with Store.open(home / "agentdeck.db", AGENTS) as store:
            [task] = store.read(queries.tasks)
            assert (task.owner, task.title, task.created_by) == ("ops", MODEL_ONLY_ASK, OWNER)
            assert rules.triage_rule(task, tools) is None and rules.first_step(task, tools) is None
            steps = model_work(store, task.id, tools)
        assert task.result and steps[-1]["summary"] == shorten(task.result)  # the model's final answer
        tmux("send-keys", "-t", session, "C-q")
        screen_until(session, lambda s: "slots" not in s, 30)  # the terminal is given back
        with Store.open(home / "agentdeck.db", AGENTS) as store:
            assert store.read(queries.instance) is None  # the instance released its claim
    finally:
        tmux("kill-session", "-t", session)


@pytest.mark.timeout(120)
async def test_attach_decides_an_approval_that_resumes_the_headless_agent(home: Path, db_path: Path,
                                                                          tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write the notes", owner="dev")
    script = tmp_path / "script.json"
    step = {"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}
    script.write_text(json.dumps({"dev": [json.dumps({"action": "act", "reason": "mine"}), json.dumps(step),
                                          '{"final": "wrote notes.txt"}',
                                          '{"outcome": "success", "lesson": "ok", "importance": 2, "tags": []}']}))
    helper = Path(__file__).with_name("crew_host.py")
    headless = await asyncio.create_subprocess_exec(sys.executable, str(helper), str(db_path), str(ws),
                                                    str(script), "cli", env=subprocess_env(home),
                                                    stdout=asyncio.subprocess.PIPE)
    try:
        assert headless.stdout is not None
        assert (await asyncio.wait_for(headless.stdout.readline(), 60)).strip() == b"READY"
        config = parse_config(f'workspace = "{ws}"\nschedules = []\n')
        app = make_app(Attached(db_path, config), home, grace_s=0.0)
        async with app.run_test(size=(160, 48)) as pilot:
            deadline = time.monotonic() + 60
            while not isinstance(app.screen, ApprovalModal):
                assert time.monotonic() < deadline, "no approval came"
                await pilot.pause(0.1)
            assert app.screen.approval.tool == "write_file"  # type: ignore[attr-defined]
            await pilot.press("y")
            while True:
                with Store.open(db_path, AGENTS) as store:
                    done = store.read(queries.task, task.id)
                if done is not None and done.status in ("done", "failed"):
                    break
                assert time.monotonic() < deadline, "the headless agent did not resume"
                await pilot.pause(0.2)
        assert done.status == "done" and (ws / "notes.txt").read_text() == "hello"
    finally:
        headless.terminate()
        await asyncio.wait_for(headless.wait(), 30)
