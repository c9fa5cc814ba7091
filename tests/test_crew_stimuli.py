"""The crew's other stimuli and limits: direct messages that become work, deferred tasks
that come back, the fan-out cap, prompts fitted to a token budget."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from helpers import AGENTS, finished, ok, one_line_error, reflect, run, until
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
from agents.crew.budget import MESSAGE_OVERHEAD, TokenCounter
from agents.errors import PermissionDenied, TooManySubtasks
from agents.inference.types import ChatMessage
from agents.protocol import OWNER, SYSTEM
from agents.runtime import Host
from agents.runtime.event_text import event_line
from agents.store import Store, queries
from agents.store import reducers as r
from agents.store.reducers.tasks import MAX_SUBTASKS


def host_for(db_path: Path, ws: Path, outputs: dict[str, list[str]], extra: str = "") -> Host:
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n{extra}')
    return Host(db_path, config, backend=ScriptedBackend(queued(outputs)), crew=True)  # type: ignore[arg-type]


# --- direct messages are stimuli ---


async def test_a_message_to_an_agent_becomes_its_task_and_the_reply_comes_back(db_path: Path, ws: Path,
                                                                               home: Path) -> None:
    outputs = {"dev": ['{"action": "act", "reason": "asked directly"}', '{"final": "the tests pass"}',
                       reflect("owner asks about tests")]}
    async with host_for(db_path, ws, outputs) as host:
        said = await asyncio.to_thread(ok, home, "tell", "dev", "do the tests pass?")
        match = re.fullmatch(r"message (\d+) sent to dev; .*`agentdeck messages`\n", said)
        assert match is not None, said  # says what the number is: not a task id
        message_id = int(match[1])

        async def has_task() -> bool:
            return any(t.message_id == message_id for t in await host.store.read(queries.tasks))

        await until(has_task)
        task = next(t for t in await host.store.read(queries.tasks) if t.message_id == message_id)
        assert (task.owner, task.created_by, task.body) == ("dev", OWNER, "do the tests pass?")
        done = await finished(host, task.id)
        assert (done.status, done.result) == ("done", "the tests pass")

        async def replied() -> bool:
            return any(m.sender == "dev" for m in await host.store.read(queries.direct_messages, OWNER))

        await until(replied)
    listing = await asyncio.to_thread(ok, home, "messages", "--json")
    rows = json.loads(listing)
    back = [m for m in rows if m["sender"] == "dev"]
    assert len(back) == 1 and back[0]["task_id"] == task.id and "the tests pass" in back[0]["body"]
    # One task per message: the reply names a task, so it starts nothing on the owner's side,
    # and no second task appeared for the same message.
    with Store.open(db_path, AGENTS) as store:
        tasks = store.read(queries.tasks)
        assert [t.id for t in tasks if t.message_id == message_id] == [task.id]
        assert len(tasks) == 1


def test_task_from_message_is_idempotent_and_only_for_plain_direct_messages(store: Store) -> None:
    msg = store.write(r.send_direct, OWNER, "ops", "how is the disk?")
    first = store.write(r.task_from_message, "system", msg.id)
    again = store.write(r.task_from_message, "system", msg.id)
    assert first is not None and again is not None and first.id == again.id
    assert first.title == "message from owner: how is the disk?"
    other = store.write(r.create_task, OWNER, "some task", owner="lead")
    about_a_task = store.write(r.send_direct, "lead", "ops", "fyi", task_id=other.id)
    assert store.write(r.task_from_message, "system", about_a_task.id) is None
    to_owner = store.write(r.send_direct, "ops", OWNER, "hello")
    assert store.write(r.task_from_message, "system", to_owner.id) is None
    with pytest.raises(PermissionDenied):
        store.write(r.task_from_message, "ops", msg.id)  # agents cannot mint tasks from messages
    assert store.read(queries.messages_without_task, list(AGENTS)) == []


async def test_messages_sent_while_agentdeck_was_down_are_taken_up(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        msg = store.write(r.send_direct, "lead", "review", "have a look at the notes")
    outputs = {"review": ['{"action": "act", "reason": "lead asked"}', '{"final": "looked"}', reflect("x")]}
    async with host_for(db_path, ws, outputs) as host:
        async def answered() -> bool:
            tasks = await host.store.read(queries.tasks)
            return any(t.message_id == msg.id and t.status == "done" for t in tasks)

        await until(answered)
        dms = await host.store.read(queries.direct_messages, "lead", received_only=True)
        assert any(m.sender == "review" and "looked" in m.body for m in dms)


async def test_recent_messages_reach_the_prompt(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        parent = store.write(r.create_task, OWNER, "earlier work", owner="lead")
        store.write(r.send_direct, "lead", "dev", "remember: the repo uses tabs", task_id=parent.id)
        task = store.write(r.create_task, OWNER, "fix the indentation", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "done"}', reflect("tabs")]}
    async with host_for(db_path, ws, outputs) as host:
        await finished(host, task.id)
        asked = host.backend.requests  # type: ignore[attr-defined]
        first = next(q for q in asked if q.agent == "dev").messages[-1].content
    assert "Recent messages to you:\n- from lead: remember: the repo uses tabs" in first


def test_cli_tell_and_messages_refuse_bad_input(home: Path) -> None:
    proc = run(home, "tell", "nobody", "hi")
    assert proc.returncode == 2 and re.fullmatch(r"agentdeck: unknown agent 'nobody' \(agents: .*\)",
                                                 one_line_error(proc))
    proc = run(home, "messages", "--channel", "nope")
    assert proc.returncode == 2 and one_line_error(proc) == "agentdeck: no channel #nope"
    assert ok(home, "messages") == "no messages\n"


# --- deferred tasks come back ---


async def test_a_deferred_task_comes_back_and_is_worked_the_second_time(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "tidy the notes", owner="scribe")
    outputs = {"scribe": ['{"action": "defer", "reason": "busy"}', '{"action": "defer", "reason": "still busy"}',
                          '{"final": "tidied"}', reflect("tidy notes")]}
    async with host_for(db_path, ws, outputs, "defer_s = 0.5\n") as host:
        async def deferred() -> bool:
            t = await host.store.read(queries.task, task.id)
            return t is not None and t.status == "deferred"

        await until(deferred)
        done = await finished(host, task.id)
        events = await host.store.read(queries.events_after, 0, 10_000)
    assert (done.status, done.result) == ("done", "tidied")
    triages = [e.payload for e in events if e.kind == "agent.triage" and e.subject == f"task:{task.id}"]
    assert [t.action for t in triages] == ["defer", "act"]
    assert "deferred once already" in triages[1].reason


def test_defer_s_must_be_sane() -> None:
    from agents.errors import ConfigError

    for bad in ("0", "-1", "nan", "1e9"):
        with pytest.raises(ConfigError, match="defer_s"):
            parse_config(f"defer_s = {bad}\n")


# --- fan-out ---


def test_a_task_has_at_most_max_subtasks(store: Store) -> None:
    root = store.write(r.create_task, OWNER, "plan", owner="lead")
    for i in range(MAX_SUBTASKS):
        store.write(r.create_task, "lead", f"part {i}", owner="dev", parent_id=root.id)
    with pytest.raises(TooManySubtasks, match=f"already has {MAX_SUBTASKS} subtasks"):
        store.write(r.create_task, "lead", "one more", owner="dev", parent_id=root.id)
    assert len([t for t in store.read(queries.tasks) if t.parent_id == root.id]) == MAX_SUBTASKS


# --- token budgets ---


class WordCounter:
    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        return len(text.split())


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


async def test_fit_drops_the_oldest_turns_and_marks_them() -> None:
    counter = TokenCounter(WordCounter())
    head = [ChatMessage(role="system", content=words(50, "s")), ChatMessage(role="user", content=words(20, "t"))]
    turns = []
    for i in range(6):
        turns += [ChatMessage(role="assistant", content=words(30, f"a{i}-")),
                  ChatMessage(role="user", content=words(30, f"r{i}-"))]
    budget = 70 + 2 * MESSAGE_OVERHEAD + 3 * 2 * (30 + MESSAGE_OVERHEAD) + 20
    fitted = await counter.fit(head, turns, budget)
    assert fitted[:2] == head
    assert fitted[2].content == "(3 earlier step(s) left out for room)"
    assert fitted[3:] == turns[6:]  # the newest three turns, whole


@settings(max_examples=60, deadline=None)
@given(head_words=st.lists(st.integers(0, 400), min_size=1, max_size=3),
       turn_words=st.lists(st.integers(0, 200), max_size=12), budget=st.integers(200, 2000))
def test_fitted_prompts_stay_within_the_budget(head_words: list[int], turn_words: list[int], budget: int) -> None:
    counter = TokenCounter(WordCounter())
    head = [ChatMessage(role="user", content=words(n, "h")) for n in head_words]
    turns = [ChatMessage(role="assistant" if i % 2 == 0 else "user", content=words(n, "x"))
             for i, n in enumerate(turn_words[: len(turn_words) // 2 * 2])]

    async def check() -> None:
        fitted = await counter.fit(head, turns, budget)
        # Within budget, up to the one-line mark of what was left out.
        assert await counter.size(fitted) <= budget + 20 + MESSAGE_OVERHEAD
        assert [m.role for m in fitted[: len(head)]] == [m.role for m in head]
        kept = fitted[len(head):]
        if kept and kept[0].content.endswith("left out for room)"):
            kept = kept[1:]
        assert kept == turns[len(turns) - len(kept):]  # a tail of the turns, in order

    asyncio.run(check())


# --- scribe answers "what happened" from the log ---


async def test_scribe_answers_what_happened_from_the_log_of_the_named_task(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        old = store.write(r.create_task, OWNER, "rotate the backups", owner="ops")
        child = store.write(r.create_task, "system", "prune old snapshots", owner="dev", parent_id=old.id)
        store.write(r.set_task_status, "system", child.id, "cancelled", "not needed")
        store.write(r.create_task, OWNER, "unrelated chore", owner="lead")
        ask = store.write(r.create_task, OWNER, f"what happened with task {old.id}?", owner="scribe")
    outputs = {"scribe": ['{"final": "ops rotated nothing yet; dev\'s pruning was cancelled"}',
                          reflect("read the log first")],
               "ops": ['{"action": "defer", "reason": "later"}'], "lead": ['{"action": "defer", "reason": "later"}']}
    async with host_for(db_path, ws, outputs) as host:
        done = await finished(host, ask.id)
        asked = [q for q in host.backend.requests if q.agent == "scribe"]  # type: ignore[attr-defined]
        events = await host.store.read(queries.events_after, 0, 10_000)
    assert done.status == "done"
    triage = next(e.payload for e in events if e.kind == "agent.triage" and e.subject == f"task:{ask.id}")
    assert triage.by == "rule"
    fed_back = asked[0].messages[-1].content
    assert fed_back.startswith("Result: [ok]")
    assert '"title":"rotate the backups"' in fed_back and '"title":"prune old snapshots"' in fed_back
    assert '"new":"cancelled"' in fed_back and "unrelated chore" not in fed_back


# --- pause ---


async def paused(host: Host, agent: str):  # type: ignore[no-untyped-def]
    """Pause the agent's loop and wait until it says so (it then takes nothing new)."""
    assert host.crew is not None
    loop = host.crew.loops[agent]
    loop.pause(True)

    async def shows_paused() -> bool:
        status = (await host.store.read(queries.agent_statuses)).get(agent)
        return status is not None and status.state == "paused"

    await until(shows_paused)
    return loop


async def test_a_paused_agent_takes_no_new_task_until_resumed(db_path: Path, ws: Path) -> None:
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "done"}', reflect("x")]}
    async with host_for(db_path, ws, outputs) as host:
        assert host.crew is not None
        loop = await paused(host, "dev")
        task = await host.store.write(r.create_task, OWNER, "tidy up", owner="dev")

        async def delivered() -> bool:  # in dev's queue: only the paused loop could start it
            return task.id in loop.pending

        await until(delivered)
        assert (await host.store.read(queries.task, task.id)).status == "queued"  # type: ignore[union-attr]
        loop.pause(False)
        done = await finished(host, task.id)
    assert done.status == "done"


async def test_waiting_tasks_run_by_priority_then_age(db_path: Path, ws: Path) -> None:
    act = '{"action": "act", "reason": "mine"}'
    outputs = {"dev": [x for i in range(4) for x in (act, f'{{"final": "done {i}"}}', reflect("x"))]}
    async with host_for(db_path, ws, outputs) as host:
        assert host.crew is not None
        loop = await paused(host, "dev")
        low = await host.store.write(r.create_task, OWNER, "low", owner="dev", priority=1)
        high = await host.store.write(r.create_task, OWNER, "high", owner="dev", priority=5)
        middle = await host.store.write(r.create_task, OWNER, "middle", owner="dev", priority=3)
        also_middle = await host.store.write(r.create_task, OWNER, "middle, later", owner="dev", priority=3)

        async def all_queued_here() -> bool:
            return loop.queue.qsize() == 4

        await until(all_queued_here)
        loop.pause(False)
        for task in (low, high, middle, also_middle):
            await finished(host, task.id)
        events = await host.store.read(queries.events_after, 0, 10_000)
    started = [e.payload.task_id for e in events if e.kind == "task.status" and e.payload.new == "active"]
    assert started == [high.id, middle.id, also_middle.id, low.id]


# --- schedules do not pile up ---


def due_again(store: Store, schedule_id: int) -> None:
    store.conn.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (time.time() - 1, schedule_id))


def test_a_schedule_queues_no_new_run_while_its_last_one_is_unfinished(store: Store) -> None:
    """Issue 15: health checks piled up while ops was behind. A due schedule whose last
    task is still queued or active is skipped, and its next run moves on; the skip is an
    event, as every change is."""
    s = store.write(r.set_schedule, OWNER, "ops", "health", 60, first_run_at=time.time() - 1)
    first = store.write(r.fire_schedule, SYSTEM, s.id)
    assert first is not None
    for status in (None, "active"):  # queued, then active: skipped both times
        if status is not None:
            store.write(r.set_task_status, "ops", first, status)
        due_again(store, s.id)
        assert store.write(r.fire_schedule, SYSTEM, s.id) is None
        [after] = store.read(queries.schedules)
        assert after.next_run_at > time.time()  # moved on: not retried every tick
        last = store.read(queries.events_after, 0, 10_000)[-1]  # and an event says so
        assert last.kind == "schedule.skipped" and last.subject == f"schedule:{s.id}"
        assert (last.payload.pending_task_id, last.payload.next_run_at) == (first, after.next_run_at)
        assert f"schedule {s.id} skipped: task {first} not finished" in event_line(last)
        assert [t.id for t in store.read(queries.tasks, owner="ops")] == [first]
    store.write(r.set_task_status, "ops", first, "done", "all well")
    due_again(store, s.id)
    second = store.write(r.fire_schedule, SYSTEM, s.id)
    assert second is not None and second != first
    assert [t.status for t in store.read(queries.tasks, owner="ops")] == ["done", "queued"]


async def test_the_host_fires_a_schedule_again_only_once_its_task_is_done(
        db_path: Path, ws: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Skipped three times in a row (its last run may be stuck), it is warned about once."""
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n')
    async with Host(db_path, config, backend=ScriptedBackend(queued({}))) as host:  # type: ignore[arg-type]
        schedule = await host.store.write(r.set_schedule, OWNER, "ops", "tick", 1.0,
                                          first_run_at=time.time() - 1)
        moves: set[float] = set()

        async def skipped_four_times() -> bool:  # the next run moved on 4 times after the first
            [s] = await host.store.read(queries.schedules)
            moves.add(s.next_run_at)
            return len(moves) >= 5

        await until(skipped_four_times)
        warned = [rec.getMessage() for rec in caplog.records if "in a row" in rec.getMessage()]
        assert warned == [f"schedule {schedule.id} (ops tick) skipped 3 times in a row: the task "
                          "of its last run is not finished"]
        tasks = await host.store.read(queries.tasks, owner="ops")
        assert [t.title for t in tasks] == ["[tick] scheduled"]  # no crew: it stays queued
        await host.store.write(r.set_task_status, "ops", tasks[0].id, "cancelled")

        async def fired_again() -> bool:
            return len(await host.store.read(queries.tasks, owner="ops")) == 2

        await until(fired_again)
        assert schedule.id == (await host.store.read(queries.schedules))[0].id
