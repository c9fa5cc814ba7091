"""`agentdeck mcp serve`: the real server in a subprocess on stdio, driven by the MCP SDK's
own client. Its surface is exactly five tools (never one that decides an approval); a
task sent through it is queued as `agentdeck send` queues one and is worked by a running
crew; everything read back is terminal-safe; bad input is a one-line tool error and the
server goes on; stdin closing or SIGTERM ends it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers import AGENTS, REPO, finished, reflect, subprocess_env, until
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult
from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
from agents.protocol import OWNER
from agents.runtime import Host
from agents.store import Store, queries
from agents.store import reducers as r

SERVE = [sys.executable, "-c", "from app.commands.mcp import main; main()"]
CALL_S = 30.0  # the longest one request may take: a hang fails the test, it does not eat CI
HOSTILE = "deploy \x1b]0;pwned\x07 now \x1b[2J\u202egnp.exe\r"
RAW = ("\x1b", "\x07", "\u202e", "\r")


@asynccontextmanager
async def serving(home: Path, errlog: Path) -> AsyncIterator[Client]:
    """The server as an editor would start it, its stderr kept in `errlog`."""
    params = StdioServerParameters(command=SERVE[0], args=SERVE[1:], env=subprocess_env(home), cwd=REPO)
    with errlog.open("a") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=CALL_S) as client:
            yield client
    logged = errlog.read_text()  # noqa: ASYNC240 - the session is over; a small local file
    assert "Traceback" not in logged, logged


def text(result: CallToolResult) -> str:
    assert not result.is_error, result.content
    (content,) = result.content
    return content.text  # type: ignore[union-attr]


def error(result: CallToolResult) -> str:
    assert result.is_error, result.content
    (content,) = result.content
    message = content.text  # type: ignore[union-attr]
    assert "\n" not in message and not any(c in message for c in RAW), message
    return message


def assert_terminal_safe(shown: str) -> None:
    assert not any(c in shown for c in RAW), repr(shown)
    assert all(c == "\n" or c >= " " for c in shown), repr(shown)


@pytest.mark.timeout(60)
async def test_the_tools_are_exactly_the_safe_surface(home: Path, tmp_path: Path) -> None:
    async with serving(home, tmp_path / "err.log") as client:
        tools = (await client.list_tools()).tools
        names = sorted(t.name for t in tools)
        assert names == ["list_approvals", "read_log", "read_task", "read_tasks", "send_task"]
        assert not [n for n in names if any(w in n for w in ("approve", "deny", "decide"))]
        read_only = {t.name for t in tools if t.annotations and t.annotations.read_only_hint}
        assert read_only == {"list_approvals", "read_log", "read_task", "read_tasks"}
        assert error(await client.call_tool("approve", {"id": 1})) == "Unknown tool: approve"


@pytest.mark.timeout(60)
async def test_a_task_sent_is_queued_like_send_and_read_back(home: Path, db_path: Path, tmp_path: Path) -> None:
    async with serving(home, tmp_path / "err.log") as client:
        task_id = int(text(await client.call_tool("send_task", {"text": "@dev fix the parser\nit drops tabs",
                                                                 "priority": 3})))
        with Store.open(db_path, AGENTS) as store:
            task = store.read(queries.task, task_id)
        assert task is not None
        assert (task.owner, task.created_by, task.title, task.body, task.priority, task.status) == (
            "dev", OWNER, "fix the parser", "@dev fix the parser\nit drops tabs", 3, "queued")
        routed = int(text(await client.call_tool("send_task", {"text": "what changed?"})))
        with Store.open(db_path, AGENTS) as store:
            assert store.read(queries.task, routed).owner is None  # type: ignore[union-attr]  # the router's

        listed = text(await client.call_tool("read_tasks", {})).splitlines()
        assert listed == [f"#{routed} [queued] (unassigned) p1: what changed?",
                          f"#{task_id} [queued] dev p3: fix the parser"]
        assert text(await client.call_tool("read_tasks", {"owner": "dev"})).splitlines() == listed[1:]
        assert text(await client.call_tool("read_tasks", {"status": "done"})) == "no tasks"
        shown = text(await client.call_tool("read_task", {"id": task_id}))
        assert shown.splitlines()[:2] == [f"#{task_id} fix the parser",
                                          "status queued · owner dev · by owner · priority 3"]
        assert "it drops tabs" in shown
        log = text(await client.call_tool("read_log", {"task": task_id})).splitlines()
        assert [line.split()[3] for line in log] == ["task.created"]


@pytest.mark.timeout(60)
async def test_bad_input_is_a_one_line_tool_error_and_the_server_goes_on(home: Path, tmp_path: Path) -> None:
    async with serving(home, tmp_path / "err.log") as client:
        unknown = error(await client.call_tool("send_task", {"text": "@nobody do it"}))
        assert unknown.endswith("unknown agent 'nobody' (agents: lead, dev, review, ops, scribe)")
        assert "unknown agent 'nobody'" in error(await client.call_tool("send_task", {"text": "x", "to": "nobody"}))
        assert "addressed to both" in error(await client.call_tool("send_task", {"text": "@dev x", "to": "ops"}))
        assert "empty" in error(await client.call_tool("send_task", {"text": "   "}))
        assert "priority" in error(await client.call_tool("send_task", {"text": "x", "priority": 10}))
        assert "priority" in error(await client.call_tool("send_task", {"text": "x", "priority": "high"}))
        assert "limit" in error(await client.call_tool("read_tasks", {"limit": 0}))
        assert "limit" in error(await client.call_tool("read_log", {"limit": 501}))
        assert "unknown status" in error(await client.call_tool("read_tasks", {"status": "\x1b[2Jgone"}))
        assert "unknown agent" in error(await client.call_tool("read_tasks", {"owner": "nobody"}))
        assert "id" in error(await client.call_tool("read_task", {"id": 2**63}))
        assert "id" in error(await client.call_tool("read_task", {"id": -1}))
        assert "id" in error(await client.call_tool("read_task", {}))
        assert error(await client.call_tool("read_task", {"id": 99})).endswith("no task 99")
        assert error(await client.call_tool("read_log", {"task": 99})).endswith("no task 99")
        assert text(await client.call_tool("read_tasks", {})) == "no tasks"  # nothing was queued


@pytest.mark.timeout(60)
async def test_pending_approvals_are_listed_never_decided(home: Path, db_path: Path, tmp_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "clean up", owner="dev")
        asked = store.write(r.request_approval, "dev", "shell", {"command": "rm -rf build \x1b[2J"},
                            "rm -rf build", "the build dir is stale", timeout_s=600, task_id=task.id)
    async with serving(home, tmp_path / "err.log") as client:
        shown = text(await client.call_tool("list_approvals", {}))
        assert shown.startswith(f"approval {asked.id}: dev wants shell (expires in ")
        assert "resolves to: rm -rf build" in shown and "\\u001b[2J" in shown  # JSON's escape, shown
        assert_terminal_safe(shown)
        with Store.open(db_path, AGENTS) as store:
            store.write(r.decide_approval, OWNER, asked.id, False)
        assert text(await client.call_tool("list_approvals", {})) == "no pending approvals"


@pytest.mark.timeout(60)
async def test_hostile_text_comes_back_escaped(home: Path, db_path: Path, tmp_path: Path) -> None:
    async with serving(home, tmp_path / "err.log") as client:
        sent = int(text(await client.call_tool("send_task", {"text": HOSTILE})))
        with Store.open(db_path, AGENTS) as store:  # an agent's result is untrusted text too
            child = store.write(r.create_task, OWNER, f"sub {HOSTILE}", owner="ops", parent_id=sent)
            store.write(r.set_task_status, "ops", child.id, "active")
            store.write(r.set_task_status, "ops", child.id, "done", f"result {HOSTILE}")
        for tool, args in [("read_tasks", {}), ("read_task", {"id": sent}), ("read_log", {}),
                           ("read_task", {"id": child.id})]:
            shown = text(await client.call_tool(tool, args))
            assert_terminal_safe(shown)
            assert "\\x1b]0;pwned\\x07" in shown or "\\u001b]0;pwned\\u0007" in shown, (tool, shown)
        tree = text(await client.call_tool("read_task", {"id": sent}))
        assert f"subtasks:\n  #{child.id} [done] ops p1: sub deploy \\x1b]0;pwned" in tree


def _spawn(home: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """The server with a ping answered: it is serving. Lines that are no JSON-RPC before
    it (not JSON; a lone surrogate, which no UTF-8 store could keep) are dropped."""
    proc = subprocess.Popen(SERVE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=(tmp_path / "err.log").open("ab"), env=subprocess_env(home), cwd=REPO)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"not json\n\xff\xfe\n")
    proc.stdin.write(b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "send_task", '
                     b'"arguments": {"text": "odd \\ud800"}}}\n')
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode() + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["id"] == 1
    return proc


@pytest.mark.timeout(60)
def test_stdin_closing_or_sigterm_ends_the_server(home: Path, tmp_path: Path) -> None:
    proc = _spawn(home, tmp_path)
    proc.stdin.close()  # type: ignore[union-attr]
    assert proc.wait(timeout=10) == 0
    proc = _spawn(home, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)  # while it waits on stdin, which stays open
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert "Traceback" not in (tmp_path / "err.log").read_text()


@pytest.mark.timeout(120)
async def test_a_task_sent_through_mcp_is_worked_by_the_crew(home: Path, db_path: Path, ws: Path,
                                                             tmp_path: Path) -> None:
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n')
    backend = ScriptedBackend(queued({"ops": ['{"final": "the disk is 42% full"}',
                                              reflect("check the disk with system_health")]}))
    async with Host(db_path, config, backend=backend, crew=True) as host:  # type: ignore[arg-type]
        async with serving(home, tmp_path / "err.log") as client:
            task_id = int(text(await client.call_tool("send_task", {"text": "@ops report disk usage"})))
            done = await finished(host, task_id)
            assert (done.status, done.result) == ("done", "the disk is 42% full")

            async def shown_done() -> bool:  # the server's own connection sees the same
                return "status done" in text(await client.call_tool("read_task", {"id": task_id}))

            await until(shown_done)
            shown = text(await client.call_tool("read_task", {"id": task_id}))
            assert "result: the disk is 42% full" in shown
            assert "steps:" in shown and "system_health" in shown
            listed = text(await client.call_tool("read_tasks", {"status": "done"}))
            assert listed == f"#{task_id} [done] ops p1: report disk usage → the disk is 42% full"
            kinds = [line.split()[3] for line in
                     text(await client.call_tool("read_log", {"task": task_id, "limit": 500})).splitlines()]
            assert kinds[0] == "task.created" and "agent.step" in kinds
