"""Issue 15, the crew: a task's size and its tree's growth are capped, and what the
model did is said as it happened (the last step's refusal, a retried parse, the
model's own reason on an approval). Scripted backends: the outputs must still pass
the schemas the real model's grammar enforces, unless a test turns the grammar off."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import AGENTS, call, context, finished, one_line_error, reflect, run, until
from scripted_backend import Script, ScriptedBackend, ScriptRequest, queued

from agents.config import AgentConfig, parse_config
from agents.crew import prompts
from agents.crew.budget import CHARS_PER_TOKEN
from agents.crew.harness import Harness
from agents.crew.schemas import ToolStep, parse_step
from agents.crew.team import ROUTE_CHARS
from agents.errors import TaskTreeTooLarge
from agents.gate import REASON_CHARS, Gate
from agents.protocol import OWNER, Approval
from agents.runtime import Host
from agents.store import AsyncStore, Store, queries
from agents.store import reducers as r
from agents.store.reducers import tasks as tasks_module
from agents.store.reducers.tasks import MAX_BODY, MAX_LIVE_SUBTASKS
from agents.tools.base import AgentStore

# --- size and fan-out caps ---


class CountingBackend(ScriptedBackend):
    """The scripted backend, remembering how many characters it was asked to count."""

    def __init__(self, script: Script, **kwargs: Any) -> None:
        super().__init__(script, **kwargs)
        self.counted: list[int] = []

    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        self.counted.append(len(text))
        return await super().count_tokens(text)


def test_cli_send_refuses_a_body_past_the_cap(home: Path) -> None:
    proc = run(home, "send", "--to", "dev", "x" * (MAX_BODY + 1))
    assert proc.returncode != 0
    assert one_line_error(proc) == f"agentdeck: task body longer than {MAX_BODY} characters"


@pytest.mark.timeout(120)
async def test_a_huge_task_reaches_triage_and_the_router_with_bounded_prompts(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        at_cap = store.write(r.create_task, OWNER, "read this paste", body=("lorem ipsum " * MAX_BODY)[:MAX_BODY],
                             owner="dev")
        old = store.write(r.create_task, OWNER, "an old row", owner="dev")
        unassigned = store.write(r.create_task, OWNER, "an old unassigned row")
    # An old database may hold rows past the cap: 3 MB bodies, written directly.
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE tasks SET body = ? WHERE id IN (?, ?)", ("word " * 600_000, old.id, unassigned.id))

    def script(request: ScriptRequest) -> str:
        return '{"agent": "dev"}' if request.agent == "router" else '{"action": "ignore", "reason": "test"}'

    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    backend = CountingBackend(script)
    async with Host(db_path, config, backend=backend, crew=True) as host:  # type: ignore[arg-type]
        for task in (at_cap, old, unassigned):
            done = await finished(host, task.id)
            assert (done.owner, done.status, done.result) == ("dev", "done", "ignored: test")
    # The tokenizer saw at most what the prompt budget could hold, never the megabytes.
    per_slot = config.inference.n_ctx // config.inference.slots
    assert backend.counted and max(backend.counted) <= per_slot * CHARS_PER_TOKEN + 100
    for request in backend.requests:
        assert all(len(m.content) <= per_slot * CHARS_PER_TOKEN + 100 for m in request.messages)
    triage = [q.messages[-1].content for q in backend.requests if q.agent == "dev"]
    assert all("characters left out for room" in text for text in triage)
    [routed] = [q for q in backend.requests if q.agent == "router"]
    assert len(routed.messages[-1].content) <= ROUTE_CHARS + 200


async def test_delegate_refuses_self_delegation_and_stops_a_runaway_tree(tmp_path: Path, ws: Path) -> None:
    store = await AsyncStore(tmp_path / "agentdeck.db", AGENTS).open()
    try:
        root = await store.write(r.create_task, OWNER, "plan", owner="lead")
        lead = context(store, ws, "lead", task_id=root.id)
        refused = await call(lead, "delegate", to="lead", title="do it myself")
        assert (refused.status, refused.text) == (
            "error", "delegate: lead cannot delegate to itself; do it, or pick another agent")
        assert [t.id for t in await store.read(queries.tasks)] == [root.id]
        parts = [(await store.write(r.create_task, OWNER, f"part {i}", owner="dev", parent_id=root.id)).id
                 for i in range(8)]
        for i in range(MAX_LIVE_SUBTASKS - len(parts)):
            await store.write(r.create_task, OWNER, f"piece {i}", owner="review", parent_id=parts[i % 8])
        dev = context(store, ws, "dev", task_id=parts[0])
        stopped = await call(dev, "delegate", to="ops", title="one more")
        assert stopped.status == "error" and stopped.text.endswith("; the task tree was stopped")
        tasks = await store.read(queries.tasks)
        assert len(tasks) == 1 + MAX_LIVE_SUBTASKS
        assert [(t.status, "runaway delegation" in (t.result or "")) for t in tasks if t.id == root.id] == [
            ("failed", True)]
        assert {t.status for t in tasks if t.id != root.id} == {"cancelled"}
    finally:
        await store.close()


@pytest.mark.timeout(180)
async def test_runaway_delegation_ends_bounded_with_the_root_failed_and_the_crew_idle(
        db_path: Path, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every task delegates three subtasks (lead: twelve) before answering. The rate cap
    # has its own test; here the tree cap is what must stop it.
    monkeypatch.setattr(tasks_module, "MAX_DELEGATIONS", 10_000)
    workers = [a for a in AGENTS if a != "lead"]
    agents = "".join(f'[agents.{a}]\ntools = ["delegate"]\nmax_concurrent = 16\nmax_steps = '
                     f'{13 if a == "lead" else 4}\n' for a in AGENTS)
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n{agents}')

    def script(request: ScriptRequest) -> str:
        schema = request.schema or {}
        if "action" in schema.get("properties", {}):
            return '{"action": "act", "reason": "mine"}'
        if "outcome" in schema.get("properties", {}):
            return reflect("delegated")
        if not any("tool" in option["properties"] for option in schema.get("anyOf", [])):
            return '{"final": "delegated everything"}'
        done = sum(m.content.startswith("Result:") for m in request.messages)
        others = [a for a in workers if a != request.agent]
        return json.dumps({"tool": "delegate", "arguments": {"to": others[done % len(others)],
                                                             "title": f"part {done}"}})

    with Store.open(db_path, AGENTS) as store:
        root = store.write(r.create_task, OWNER, "plan everything", owner="lead")
    async with Host(db_path, config, backend=ScriptedBackend(script), crew=True) as host:  # type: ignore[arg-type]
        assert host.crew is not None
        ended = await finished(host, root.id)
        assert await host.crew.wait_idle(deadline_s=90)
        tasks = await host.store.read(queries.tasks)
    assert ended.status == "failed" and "runaway delegation" in (ended.result or "")
    assert MAX_LIVE_SUBTASKS < len(tasks) <= 3 * MAX_LIVE_SUBTASKS  # not 15,213
    assert all(t.status in ("done", "failed", "cancelled") for t in tasks)
    assert any(t.status == "cancelled" and "runaway delegation" in (t.result or "") for t in tasks)


# --- what the model did, said as it happened ---


def _grammarless_host(db_path: Path, ws: Path, script: Script, extra: str = "") -> Host:
    """No grammar: the model can say what a grammar would forbid, and the parse must cope."""
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n{extra}')
    return Host(db_path, config, backend=ScriptedBackend(script), crew=True,  # type: ignore[arg-type]
                harness=Harness(grammar=False))


async def test_a_tool_asked_for_at_the_last_step_is_named_as_such(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    step = '{"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}'
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', step, step]}
    async with _grammarless_host(db_path, ws, queued(outputs), "[agents.dev]\nmax_steps = 1\n") as host:
        done = await finished(host, task.id)
    assert done.status == "failed"
    assert done.result == ("step 1: the model's output did not parse twice (step 1 of 1 allows only a "
                           "final answer; the model asked for write_file)")


async def test_a_retried_parse_says_so_in_the_live_view_and_steps_show_progress(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    outputs = queued({"dev": ['{"action": "act", "reason": "mine"}', "not JSON at all", '{"final": "done"}',
                              reflect("x")]})
    seen: list[tuple[str, str, int, int]] = []
    hosts: list[Host] = []

    def script(request: ScriptRequest) -> str:
        live = hosts[0].crew.live("dev")  # type: ignore[union-attr]
        seen.append((live.phase, live.note, live.step, live.max_steps))
        return outputs(request)

    async with _grammarless_host(db_path, ws, script) as host:
        hosts.append(host)
        done = await finished(host, task.id)
    assert (done.status, done.result) == ("done", "done")
    assert seen == [("triage", "", 0, 0), ("step 1", "", 1, 8),
                    ("step 1", "retrying: the output did not parse (attempt 2 of 2)", 1, 8),
                    ("reflect", "", 0, 0)]


async def test_an_approval_carries_the_models_reason_or_none(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "mine"}',
                       '{"tool": "write_file", "arguments": {"path": "a.txt", "content": "a"}}',
                       '{"tool": "write_file", "arguments": {"path": "b.txt", "content": "b"}, '
                       '"reason": "the person asked for b.txt"}',
                       '{"final": "not allowed"}', reflect("x")]}
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    host = Host(db_path, config, backend=ScriptedBackend(queued(outputs)), approvals="cli",  # type: ignore[arg-type]
                crew=True)
    async with host:
        reasons = []
        for _ in (1, 2):
            async def asked() -> bool:
                return bool(await host.store.read(queries.approvals, status="pending"))

            await until(asked)
            [approval] = await host.store.read(queries.approvals, status="pending")
            reasons.append(approval.reason)
            await host.store.write(r.decide_approval, OWNER, approval.id, False)
        await finished(host, task.id)
    assert not reasons[0]  # agentdeck puts no words of its own in the model's mouth
    assert reasons[1] == "the person asked for b.txt"


def test_the_examples_of_tools_that_ask_a_person_carry_a_reason() -> None:
    tools = ["run_shell", "write_file", "edit_file", "read_file"]
    [head, _] = prompts.step_head("dev", AgentConfig(role="dev", system_prompt="You write code.", tools=tools), "Task #1: look")
    examples = {line.split(":", 1)[0][2:]: line.split(" Example: ", 1)[1]
                for line in head.content.splitlines() if " Example: " in line}
    for tool in ("run_shell", "write_file", "edit_file"):
        step = parse_step(examples[tool], tools)  # the example is a step the grammar allows
        assert isinstance(step, ToolStep) and step.reason, tool
    assert "reason" not in json.loads(examples["read_file"])  # never asks: no tokens spent on one


async def test_a_long_reason_reaches_the_approval_capped(tmp_path: Path, ws: Path) -> None:
    # The step phase's token cap bounds what a model says, but not every caller's reason.
    store = await AsyncStore(tmp_path / "agentdeck.db", AGENTS).open()
    asked: list[Approval] = []

    async def deny(approval: Approval) -> None:
        asked.append(approval)
        await store.write(r.decide_approval, OWNER, approval.id, False)

    try:
        gate = Gate(store, parse_config(f'workspace = "{ws}"\nsandbox = "off"\n'), tmp_path / "home")
        outcome = await gate.call("dev", "write_file", {"path": "a.txt", "content": "a"},
                                  reason="because " * 625, on_ask=deny)
        assert outcome.result.status == "denied"
        [stored] = await store.read(queries.approvals, status=None)
    finally:
        await store.close()
    for approval in (asked[0], stored):
        assert len(approval.reason or "") == REASON_CHARS
        assert (approval.reason or "").startswith("because because") and (approval.reason or "").endswith("…")


class RacingStore(AgentStore):
    """A sibling finishes between the refused create and the stop: the tree is under the
    cap again when the stop looks."""

    def __init__(self, store: AsyncStore, agent: str, finish: int) -> None:
        super().__init__(store, agent)
        self.finish = finish

    async def write(self, reducer: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().write(reducer, *args, **kwargs)
        except TaskTreeTooLarge:
            await self._store.write(r.set_task_status, OWNER, self.finish, "cancelled", "not needed")
            raise


async def test_a_tree_that_shrank_before_the_stop_is_a_tool_error_not_an_internal_one(
        tmp_path: Path, ws: Path) -> None:
    store = await AsyncStore(tmp_path / "agentdeck.db", AGENTS).open()
    try:
        root = await store.write(r.create_task, OWNER, "plan", owner="lead")
        parts = [(await store.write(r.create_task, OWNER, f"part {i}", owner="dev", parent_id=root.id)).id
                 for i in range(8)]
        for i in range(MAX_LIVE_SUBTASKS - len(parts)):
            await store.write(r.create_task, OWNER, f"piece {i}", owner="review", parent_id=parts[i % 8])
        dev = context(store, ws, "dev", task_id=parts[0])
        dev.store = RacingStore(store, "dev", finish=parts[7])
        refused = await call(dev, "delegate", to="ops", title="one more")
        assert (refused.status, refused.text) == ("error", (
            f"delegate: not created: the task tree was full a moment ago, and is not now (task {root.id}'s "
            f"tree has {MAX_LIVE_SUBTASKS - 1} unfinished subtasks, under the cap of {MAX_LIVE_SUBTASKS}); "
            "try again"))
        tasks = await store.read(queries.tasks)
        assert len(tasks) == 1 + MAX_LIVE_SUBTASKS  # nothing created, nothing stopped
        assert [t.status for t in tasks if t.id == root.id] == ["queued"]
    finally:
        await store.close()


async def test_triage_delegating_into_a_tree_that_shrank_fails_the_task_saying_why(
        db_path: Path, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "plan the release", owner="lead")

    def full_a_moment_ago(tx: Any, actor: str, title: str, **kwargs: Any) -> Any:
        raise TaskTreeTooLarge(f"task {task.id}'s tree already has {MAX_LIVE_SUBTASKS} unfinished subtasks")

    monkeypatch.setattr(r, "create_task", full_a_moment_ago)
    outputs = {"lead": ['{"action": "delegate", "reason": "dev builds", "delegate_to": "dev"}']}
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    async with Host(db_path, config, backend=ScriptedBackend(queued(outputs)), crew=True) as host:  # type: ignore[arg-type]
        done = await finished(host, task.id)
    assert (done.status, done.result) == ("failed", (
        f"could not delegate to dev: the task tree was full a moment ago, and is not now (task {task.id}'s "
        f"tree has 0 unfinished subtasks, under the cap of {MAX_LIVE_SUBTASKS}); try again"))
