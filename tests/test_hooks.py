"""[[hooks]] for real: bash scripts run in bubblewrap, the event as JSON on stdin. A
tool.before hook that denies ends the call denied with its reason, before anyone is asked
and before the tool runs; one that crashes, hangs or prints garbage denies too (fail
closed). Other events' hooks run in the background and never hold the work."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import pytest
from helpers import require_bwrap, until

from agents.bus import Bus
from agents.config import Config, parse_config
from agents.gate import Gate
from agents.hooks import Hooks, run_event_hooks
from agents.protocol import OWNER, Approval, ToolFinished
from agents.store import AsyncStore, EventFilter, queries
from agents.store import reducers as r
from app.args import Parser
from app.commands import hooks as hooks_command
from app.context import Context

WRITE = {"path": "notes.txt", "content": "hello"}  # dev's write_file asks by default
# Reads the event from stdin and denies with what it read: the reason proves the JSON came.
DENY = ("e=$(cat); case \"$e\" in *'\"tool\":\"write_file\"'*'\"path\":\"notes.txt\"'*) "
        "echo 'no writes to notes.txt today' >&2; echo 'a second line' >&2; exit 2;; esac; exit 0")


@pytest.fixture(autouse=True)
def needs_bwrap() -> None:
    require_bwrap("hooks")


def hook_toml(event: str, command: str, **extra: object) -> str:
    fields = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    return f"[[hooks]]\nevent = {json.dumps(event)}\ncommand = {json.dumps(command)}\n{fields}\n"


def configured(home: Path, ws: Path, *hooks: str) -> Config:
    text = f'workspace = "{ws}"\n\n' + "".join(hooks)
    (home / "config.toml").write_text(text)  # the same config for `agentdeck hooks test`
    return parse_config(text)


class NeverAsk:
    """on_ask for a call whose hook denies: nobody may be asked."""

    def __init__(self) -> None:
        self.asked: list[Approval] = []

    async def __call__(self, approval: Approval) -> None:
        self.asked.append(approval)


async def tool_finished_text(astore: AsyncStore, call_id: int) -> str | None:
    for event in await astore.read(queries.events_after, 0, 500, EventFilter(kinds=["tool.finished"])):
        if isinstance(event.payload, ToolFinished) and event.payload.call_id == call_id:
            return event.payload.result
    return None


@pytest.mark.timeout(30)
async def test_an_allowing_hook_lets_the_call_go_on_to_the_person(astore: AsyncStore, home: Path,
                                                                   ws: Path) -> None:
    config = configured(home, ws, hook_toml("tool.before", "cat > /dev/null; exit 0"))

    async def approve(approval: Approval) -> None:
        await astore.write(r.decide_approval, OWNER, approval.id, True)

    outcome = await Gate(astore, config, home).call("dev", "write_file", WRITE, on_ask=approve)
    assert outcome.result.status == "ok", outcome.result.text
    assert outcome.approval is not None and outcome.approval.status == "approved"
    assert (ws / "notes.txt").read_text() == "hello"


@pytest.mark.timeout(30)
async def test_a_hook_that_exits_2_denies_with_its_reason_and_nobody_is_asked(
        astore: AsyncStore, home: Path, ws: Path) -> None:
    config = configured(home, ws, hook_toml("tool.before", DENY))
    asked, waited = NeverAsk(), []

    async def waiting() -> None:
        waited.append("waiting")

    outcome = await Gate(astore, config, home).call("dev", "write_file", WRITE, on_ask=asked,
                                                    on_waiting=waiting)
    assert outcome.result.status == "denied"
    text = outcome.result.text  # the command named (shortened), then its stderr's first line
    assert text.startswith("denied by hook `e=$(cat); case") and text.endswith("`: no writes to notes.txt today")
    assert not (ws / "notes.txt").exists()  # the tool never ran
    assert asked.asked == [] and waited == [] and outcome.approval is None
    assert await astore.read(queries.approvals) == []
    row = (await astore.read(queries.tool_calls))[-1]
    assert row.status == "denied" and row.result == outcome.result.text
    assert await tool_finished_text(astore, outcome.call_id) == outcome.result.text


FAILURES = {
    "crash": ("kill -SEGV $$", 10, "failed (exit status 139: killed by SIGSEGV): denied"),
    "exit 1": ("echo 'oops' >&2; exit 1", 10, "failed (exit status 1): denied; it said: oops"),
    "hang": ("sleep 60", 1, "failed (timed out after 1 s): denied"),
    "binary": (r"printf '\xff\xfe\x00\x01binary'", 10, "failed (printed bytes that are not UTF-8 on stdout)"),
    "flood": ("yes 'deny me' | head -c 200000 >&2; exit 0", 10, "failed (printed more than 64 KB): denied"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(FAILURES))
async def test_a_failing_hook_denies_the_call_saying_so(astore: AsyncStore, home: Path, ws: Path,
                                                        case: str) -> None:
    command, timeout_s, said = FAILURES[case]
    config = configured(home, ws, hook_toml("tool.before", command, timeout_s=timeout_s))
    asked = NeverAsk()
    started = time.monotonic()
    outcome = await Gate(astore, config, home).call("dev", "write_file", WRITE, on_ask=asked)
    took = time.monotonic() - started
    assert outcome.result.status == "denied"
    assert outcome.result.text.startswith(f"hook `{command[:20]}") and said in outcome.result.text
    assert not (ws / "notes.txt").exists() and asked.asked == []
    row = (await astore.read(queries.tool_calls))[-1]
    assert row.status == "denied" and row.result == outcome.result.text
    assert took < timeout_s + 2.5, f"{case}: the call took {took:.1f} s"


@pytest.mark.timeout(30)
async def test_a_tool_before_hook_sees_the_workspace_read_only_and_no_home(astore: AsyncStore, home: Path,
                                                                           ws: Path) -> None:
    (home / "secret.txt").write_text("s3cret")
    probe = f"test ! -e {home / 'secret.txt'} || exit 3; touch probe 2>/dev/null && exit 4; exit 0"
    config = configured(home, ws, hook_toml("tool.before", probe))
    (ws / "a.txt").write_text("a")
    outcome = await Gate(astore, config, home).call("dev", "read_file", {"path": "a.txt"})
    assert outcome.result.status == "ok", outcome.result.text
    assert not (ws / "probe").exists()


@pytest.mark.timeout(30)
async def test_agent_and_tool_filters_pick_the_hooks(astore: AsyncStore, home: Path, ws: Path) -> None:
    config = configured(
        home, ws,
        hook_toml("tool.before", "echo 'lead only' >&2; exit 2", agent="lead"),
        hook_toml("tool.before", "echo 'no shell' >&2; exit 2", tool="run_shell"),
        hook_toml("tool.before", "echo 'reads by review' >&2; exit 2", agent="review", tool="read_file"),
    )
    (ws / "a.txt").write_text("a")
    gate = Gate(astore, config, home)
    assert (await gate.call("dev", "read_file", {"path": "a.txt"})).result.status == "ok"
    assert (await gate.call("lead", "read_file", {"path": "a.txt"})).result.text.endswith(": lead only")
    assert (await gate.call("review", "read_file", {"path": "a.txt"})).result.text.endswith(
        ": reads by review")
    shell = await gate.call("dev", "run_shell", {"command": "touch ran"}, on_ask=NeverAsk())
    assert shell.result.text.endswith(": no shell") and not (ws / "ran").exists()


@pytest.mark.timeout(30)
async def test_tool_after_gets_the_result_in_the_background(astore: AsyncStore, home: Path, ws: Path) -> None:
    config = configured(home, ws, hook_toml("tool.after", "cat > after.json", tool="read_file"),
                        hook_toml("tool.after", "sleep 60", timeout_s=5))
    (ws / "a.txt").write_text("contents of a")
    gate = Gate(astore, config, home)
    started = time.monotonic()
    outcome = await gate.call("dev", "read_file", {"path": "a.txt"})
    assert outcome.result.status == "ok" and time.monotonic() - started < 2  # the hang held nothing
    ran = await gate.hooks.settle()
    assert sorted(o.failure for o in ran) == ["", "timed out after 5 s"]
    event = json.loads((ws / "after.json").read_text())
    assert event["event"] == "tool.after" and event["agent"] == "dev" and event["tool"] == "read_file"
    assert event["arguments"] == {"path": "a.txt"} and event["status"] == "ok"
    assert "contents of a" in event["result"]


@pytest.mark.timeout(60)
async def test_task_events_reach_their_hooks_from_the_bus(astore: AsyncStore, home: Path, ws: Path) -> None:
    config = configured(
        home, ws,
        hook_toml("task.done", 'cat > "done-$AGENTDECK_HOOK_EVENT.json"', agent="dev"),
        hook_toml("task.created", "cat > created.json"),
        hook_toml("task.done", "touch wrong-agent", agent="ops"),
        hook_toml("task.failed", "kill -SEGV $$"),  # fails in the background: logged, nothing else
    )
    bus = await Bus(astore).start()
    start = await astore.read(queries.last_event_id)
    hooks = Hooks(config, home)
    follower = asyncio.create_task(run_event_hooks(bus, astore, hooks, start))
    try:
        task = await astore.write(r.create_task, OWNER, "ship it", owner="dev")
        await astore.write(r.set_task_status, "dev", task.id, "active")
        await astore.write(r.set_task_status, "dev", task.id, "done", "shipped")
        failing = await astore.write(r.create_task, OWNER, "break it", owner="dev")
        await astore.write(r.set_task_status, "dev", failing.id, "active")
        await astore.write(r.set_task_status, "dev", failing.id, "failed", "broke")

        async def done_written() -> bool:
            return (ws / "done-task.done.json").exists() and (ws / "created.json").exists()

        await until(done_written)
        await hooks.settle()
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await bus.close()
    done = json.loads((ws / "done-task.done.json").read_text())
    assert done["event"] == "task.done" and done["agent"] == "dev" and done["task_id"] == task.id
    assert done["status"] == "done" and done["result"] == "shipped" and done["title"] == "ship it"
    assert json.loads((ws / "created.json").read_text())["event"] == "task.created"
    assert not (ws / "wrong-agent").exists()
    assert (await astore.read(queries.task, failing.id)).status == "failed"  # the crash changed nothing


def run_cli(home: Path, *argv: str) -> int:
    parser = Parser(prog="agentdeck")
    hooks_command.register(parser.add_subparsers(dest="command", parser_class=Parser))
    args: argparse.Namespace = parser.parse_args(list(argv))
    ctx = Context(str(home))
    try:
        return args.handler(ctx, args)
    finally:
        ctx.close()


@pytest.mark.timeout(60)
def test_hooks_test_runs_the_matching_hooks_on_a_sample_event(home: Path, ws: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    configured(home, ws,
               hook_toml("tool.before", "cat > /dev/null; exit 0"),
               hook_toml("tool.before", "grep -q '\"tool\":\"run_shell\"' && echo 'no shell' >&2 && exit 2; exit 0"),
               hook_toml("tool.before", "sleep 60", timeout_s=1, agent="ops"))
    assert run_cli(home, "hooks", "test", "tool.before", "--tool", "read_file") == 0
    out = capsys.readouterr().out
    assert "allow" in out and "deny" not in out

    assert run_cli(home, "hooks", "test", "tool.before", "--agent", "ops", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["denied"] is True and report["event"]["tool"] == "run_shell"
    outcomes = report["hooks"]
    assert [o["denies"] for o in outcomes] == [False, True, True]
    assert outcomes[1]["exit_status"] == 2 and outcomes[1]["reason"] == "no shell"
    assert outcomes[2]["failure"] == "timed out after 1 s"

    assert run_cli(home, "hooks", "test", "task.done") == 0
    assert "no hook matches task.done" in capsys.readouterr().out
