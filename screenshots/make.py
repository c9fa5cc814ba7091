"""Regenerate the README's screenshots: the real CLI, run in a fresh temp home, its output
rendered to SVG by Rich; then the cockpit (screenshots/tui.py). Run: make screenshots"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def agentdeck(home: Path, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "AGENTDECK_HOME": str(home), "PYTHONPATH": str(REPO), "COLUMNS": "130"}
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def shot(name: str, title: str, home: Path, commands: list[list[str]]) -> None:
    console = Console(record=True, width=130, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor")
    for args in commands:
        console.print(Text("$ agentdeck " + " ".join(args), style="bold green"))
        console.print(Text(agentdeck(home, *args).rstrip("\n")))
    console.save_svg(str(HERE / f"{name}.svg"), title=title)
    print(f"wrote screenshots/{name}.svg")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentdeck-shots-") as tmp:
        home = Path(tmp)
        root = agentdeck(home, "send", "--to", "lead", "ship the 0.2 release").strip()
        agentdeck(home, "send", "--to", "ops", "check free disk space on /")
        agentdeck(home, "send", "what changed in the store this week?")
        from agents.config import DEFAULT_AGENTS
        from agents.store import Store
        from agents.store import reducers as r

        with Store.open(home / "agentdeck.db", list(DEFAULT_AGENTS)) as store:
            child = store.write(r.create_task, "lead", "write the release notes", owner="scribe",
                                parent_id=int(root))
            store.write(r.create_task, "lead", "run the full test suite", owner="dev", parent_id=int(root))
            store.write(r.set_task_status, "scribe", child.id, "active")
            tests = store.write(r.create_task, "lead", "tag the release", owner="dev", parent_id=int(root))
        workspace = home / "workspace"
        workspace.mkdir()
        subprocess.run(["git", "init", "-q", str(workspace)], check=True)
        (workspace / "NOTES.md").write_text("release notes\n")
        (home / "config.toml").write_text(f'workspace = "{workspace}"\n')
        # A real request through the gate, left waiting for an answer from another terminal.
        waiting = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "tool", "run", "dev", "run_shell",
             '{"command": "make test && git tag v0.2"}', "--approve-via", "cli", "--task", str(tests.id),
             "--reason", "run the test suite before tagging"],
            env={**os.environ, "AGENTDECK_HOME": str(home), "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                if "approval 1" in agentdeck(home, "approvals"):
                    break
                time.sleep(0.1)
            shot("cli-tasks", "agentdeck tasks", home, [["tasks", "--tree"], ["approvals"]])
        finally:
            waiting.kill()
            waiting.wait()
        shot("cli-status", "agentdeck status", home, [["status"], ["doctor"]])
        shot("cli-gate", "agentdeck policy", home, [
            ["policy", "check", "review", "run_shell", '{"command": "git diff --stat"}'],
            ["policy", "check", "review", "run_shell", '{"command": "git diff --out=/tmp/x HEAD"}'],
            ["policy", "check", "dev", "write_file", '{"path": "../../etc/cron.d/x", "content": ""}'],
            ["tool", "run", "review", "run_shell", '{"command": "git status --short"}'],
        ])


if __name__ == "__main__":
    main()
    from tui import main as tui_main  # the cockpit, from the real app

    tui_main()
