"""`agentdeck web`: the attached cockpit in a browser, for this machine only. The real
server (a subprocess on a loopback port) in front of a headless instance (tests/crew_host.py
on a scripted backend): every route it serves refuses a request without the token; with
it, a real headless Chromium shows the five panes and decides an approval that the
headless agent then acts on."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from helpers import AGENTS, REPO, agentdeck_cmd, subprocess_env

from agents.protocol import OWNER
from agents.store import Store, queries
from agents.store import reducers as r

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
URL = re.compile(r"(http://127\.0\.0\.1:(\d+))/\?token=([A-Za-z0-9_-]+)")
STEP = {"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}
DEV_SCRIPT = [json.dumps({"action": "act", "reason": "mine"}), json.dumps(STEP), '{"final": "wrote notes.txt"}',
              '{"outcome": "success", "lesson": "ok", "importance": 2, "tags": []}']


class Web:
    def __init__(self, proc: subprocess.Popen[str], base: str, port: int, token: str) -> None:
        self.proc, self.base, self.port, self.token = proc, base, port, token
        self.cookie = f"agentdeck_web_{port}"


@pytest.fixture
def instance(home: Path, db_path: Path, ws: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """The crew running headless on this home (dev's outputs scripted), as `attach` finds it."""
    (home / "config.toml").write_text(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n')
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"dev": DEV_SCRIPT}))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crew_host.py")), str(db_path),
                             str(ws), str(script), "cli"], env=subprocess_env(home),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def web(home: Path, instance: subprocess.Popen[str]) -> Iterator[Web]:
    proc = subprocess.Popen(agentdeck_cmd("web", "--port", "0"), env=subprocess_env(home),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the port is bound
        match = URL.search(line)
        assert match, f"no URL in {line!r}"
        yield Web(proc, match.group(1), int(match.group(2)), match.group(3))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def ends_on_sigterm(web: Web) -> None:
    """SIGTERM ends the server within seconds, and the cockpits it ran with it."""
    sessions = psutil.Process(web.proc.pid).children(recursive=True)
    web.proc.send_signal(signal.SIGTERM)
    assert web.proc.wait(15) == 0
    _, alive = psutil.wait_procs(sessions, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


async def test_nothing_is_served_without_the_token(web: Web) -> None:
    wrong = "x" * len(web.token)
    routes = ["/", "/static/js/textual.js", "/static/css/xterm.css", "/static/", "/download/abc", "/ws",
              "/no-such-page"]
    async with aiohttp.ClientSession() as http:
        for route in routes:
            for query, cookies in ((None, None), ({"token": wrong}, None), (None, {web.cookie: wrong})):
                async with http.get(web.base + route, params=query, headers=cookie_header(cookies)) as got:
                    assert (got.status, await got.read()) == (403, b""), (route, query, cookies)
        # The websocket, asked as a browser asks it: no token, a wrong one, the right one from elsewhere.
        for headers in ({}, cookie_header({web.cookie: wrong}),
                        {**cookie_header({web.cookie: web.token}), "Origin": "http://127.0.0.1:1"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{web.base}/ws?width=80&height=24", headers=headers)
            assert refused.value.status == 403, headers
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{web.base}/ws?width=80&height=24&token={wrong}")
        assert refused.value.status == 403

        async with http.get(f"{web.base}/?token={web.token}") as page:
            assert page.status == 200
            assert 'class="textual-terminal"' in await page.text()
            assert page.headers["Referrer-Policy"] == "no-referrer"
            set_cookie = page.headers["Set-Cookie"]
        assert set_cookie.startswith(f"{web.cookie}={web.token};")
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        # What the page loads next carries the cookie, not the token.
        async with http.get(f"{web.base}/static/js/textual.js",
                            headers=cookie_header({web.cookie: web.token})) as script:
            assert script.status == 200 and b"WebSocket" in await script.read()
    ends_on_sigterm(web)


def test_the_port_must_be_a_port(home: Path) -> None:
    proc = subprocess.run(agentdeck_cmd("web", "--port", "70000"), env=subprocess_env(home),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a port" in proc.stderr


def cookie_header(cookies: dict[str, str] | None) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}


def chromium_or_skip() -> str:
    """The browser test needs Chromium and Playwright: CI installs both, elsewhere it skips."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"chromium ({CHROMIUM}; apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e .[dev])")
    if missing:
        reason = "not installed: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


# textual.js keeps its xterm.js Terminal to itself and draws it on a canvas (no text in the
# DOM): catch it as it is assigned (`this.terminal = new Terminal(...)`) to read its screen.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer) window.__terminal = value;
  },
});
"""
SCREEN_TEXT = """() => {
  const t = window.__terminal;
  if (!t) return "";
  const b = t.buffer.active, lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
  return lines.join("\\n");
}"""


@pytest.mark.timeout(240)
def test_a_browser_shows_the_crew_and_decides_an_approval(web: Web, db_path: Path, ws: Path,
                                                          tmp_path: Path) -> None:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort())  # no web fonts
            page.add_init_script(CATCH_TERMINAL)
            page.goto(f"{web.base}/?token={web.token}", timeout=60_000)
            page.wait_for_function(f"names => names.every(n => ({SCREEN_TEXT})().includes(n))",
                                   arg=list(AGENTS), timeout=90_000)

            with Store.open(db_path, AGENTS) as store:  # the instance sees the write within a second
                task = store.write(r.create_task, OWNER, "write the notes", owner="dev")
            # The dialog itself (the pane says `waiting for approval` a moment before it opens).
            page.wait_for_function(f"() => ({SCREEN_TEXT})().includes('dev wants write_file')", timeout=60_000)
            with Store.open(db_path, AGENTS) as store:
                [pending] = store.read(queries.approvals)
            assert (pending.tool, pending.task_id) == ("write_file", task.id)
            shot = tmp_path / "web-cockpit.png"
            page.screenshot(path=str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG")
            if os.environ.get("AGENTDECK_SCREENSHOTS") == "1":  # `make screenshots`-style refresh
                shutil.copyfile(shot, REPO / "screenshots" / "web-cockpit.png")

            page.focus("textarea.xterm-helper-textarea")
            page.keyboard.press("y")
            deadline = time.monotonic() + 60
            while True:
                with Store.open(db_path, AGENTS) as store:
                    approval = store.read(queries.approval, pending.id)
                    done = store.read(queries.task, task.id)
                if done is not None and done.status in ("done", "failed"):
                    break
                assert time.monotonic() < deadline, "the headless agent did not resume"
                page.wait_for_timeout(200)
            ends_on_sigterm(web)  # with the browser's cockpit still open
        finally:
            browser.close()
    assert approval is not None and approval.status == "approved"
    assert done.status == "done" and (ws / "notes.txt").read_text() == "hello"
