"""The crew: scripted flows for determinism (the scripted backend's outputs must pass
the same schemas the real model's grammar enforces), beside an end-to-end run with the
real model through `agentdeck run --headless --until-idle`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import AGENTS, agentdeck_cmd, finished, model_work, ok, reflect, subprocess_env, time_left, until
from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
from agents.crew import route, rules
from agents.crew import team as crew_module
from agents.protocol import OWNER, to_builtins
from agents.runtime import Host
from agents.safe_text import shorten
from agents.store import Store, queries, rows
from agents.store import reducers as r

REFLECT = json.dumps({"outcome": "success", "lesson": "check the disk with system_health", "importance": 3,
                      "tags": ["disk"]})


@pytest.fixture
def running(db_path: Path, ws: Path) -> Callable[..., AsyncIterator[Host]]:
    """Start a host with the crew on a scripted backend."""

    def start(outputs: dict[str, list[str]], approvals: str = "deny", step_s: float = 0.0):
        config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
        backend = ScriptedBackend(queued(outputs), step_s=step_s)
        return Host(db_path, config, backend=backend, approvals=approvals, crew=True)  # type: ignore[arg-type]

    return start  # type: ignore[return-value]


async def kinds_for(host: Host, task_id: int) -> list[tuple[str, dict]]:
    events = await host.store.read(queries.events_after, 0, 10_000)
    return [(e.kind, to_builtins(e.payload)) for e in events
            if e.subject == f"task:{task_id}" and e.kind.startswith("agent.")]


async def test_a_machine_question_runs_rules_first_then_the_model(running, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "report disk usage", owner="ops")
    async with running({"ops": ['{"final": "the disk is 42% full"}', REFLECT]}) as host:
        done = await finished(host, task.id)
        assert (done.status, done.result) == ("done", "the disk is 42% full")
        phases = await kinds_for(host, task.id)
        assert [k for k, _ in phases] == ["agent.triage", "agent.step", "agent.step", "agent.reflect"]
        assert phases[0][1]["by"] == "rule"
        assert (phases[1][1]["tool"], phases[1][1]["status"]) == ("system_health", "ok")
        assert phases[2][1]["status"] == "final"
        memories = await host.store.read(queries.search_memory, "disk system_health", agent="ops")
        assert [m.content for m in memories] == ["check the disk with system_health"]
        log = await host.store.read(queries.messages, "agent-logs")
        assert log[-1].body.startswith(f"task {task.id} done: report disk usage")
        # The model saw the health figures: the rules' step was fed back.
        step_prompt = host.backend.requests[0].messages  # type: ignore[attr-defined]
        assert "Result: [ok] cpu:" in step_prompt[-1].content


async def test_delegation_tree_lead_dev_and_the_parent_combines(running, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        root = store.write(r.create_task, OWNER, "add a changelog entry", owner="lead")
    outputs = {
        "lead": ['{"action": "delegate", "reason": "dev edits files", "delegate_to": "dev"}',
                 '{"final": "changelog updated by dev"}', reflect("delegate file edits to dev")],
        "dev": ['{"final": "wrote the entry"}', reflect("changelog entries go at the top")],
    }
    async with running(outputs) as host:
        parent = await finished(host, root.id)
        children = [t for t in await host.store.read(queries.tasks) if t.parent_id == root.id]
        assert len(children) == 1
        child = children[0]
        assert (child.owner, child.created_by, child.status, child.result) == ("dev", "lead", "done",
                                                                               "wrote the entry")
        assert (parent.status, parent.result) == ("done", "changelog updated by dev")
        assert child.updated_at <= parent.updated_at
        combine = [q for q in host.backend.requests if q.agent == "lead"][1]  # type: ignore[attr-defined]
        assert "wrote the entry" in combine.messages[-1].content
        inbox = [m for m in await host.store.read(lambda c: c.execute(
            "SELECT body FROM messages WHERE recipient = 'lead'").fetchall())]
        assert any("wrote the entry" in row[0] for row in inbox)  # the asking agent is told


async def test_the_router_follows_mentions_else_lead(running, db_path: Path) -> None:
    assert route("please @review check the diff", "", list(AGENTS)) == "review"
    assert route("email me@review.example", "", list(AGENTS)) == "lead"
    assert route("what changed?", "@nobody", list(AGENTS)) == "lead"
    with Store.open(db_path, AGENTS) as store:
        mention = store.write(r.create_task, OWNER, "please @review check the diff")
        plain = store.write(r.create_task, OWNER, "what changed this week?")
    ignore = '{"action": "ignore", "reason": "nothing to do"}'
    # No mention: a constrained model choice (here: ops); when that fails, lead.
    with Store.open(db_path, AGENTS) as store:
        broken = store.write(r.create_task, OWNER, "something odd")
    outputs = {"review": [ignore], "ops": [ignore], "lead": [ignore],
               "router": ['{"agent": "ops"}', '{"agent": "nobody"}']}
    async with running(outputs) as host:
        assert (await finished(host, mention.id)).owner == "review"
        assert (await finished(host, plain.id)).owner == "ops"
        assert (await finished(host, broken.id)).owner == "lead"
        routed = [q for q in host.backend.requests if q.agent == "router"]  # type: ignore[attr-defined]
        assert len(routed) == 2 and "watches the machine" in routed[0].messages[0].content


async def test_a_denied_tool_call_is_fed_back_and_the_task_still_ends(running, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "a file to write"}',
                       '{"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}',
                       '{"final": "I was not allowed to write notes.txt"}', reflect("ask before writing")]}
    async with running(outputs) as host:
        done = await finished(host, task.id)
        assert done.result == "I was not allowed to write notes.txt"
        steps = [p for k, p in await kinds_for(host, task.id) if k == "agent.step"]
        assert (steps[0]["tool"], steps[0]["decision"], steps[0]["status"]) == ("write_file", "ask", "denied")
        assert not (ws / "notes.txt").exists()
        fed_back = host.backend.requests[2].messages[-1].content  # type: ignore[attr-defined]
        assert fed_back.startswith("Result: [denied] not approved: denied")


async def test_an_approval_answered_from_another_process_resumes_the_step(running, db_path: Path, home: Path,
                                                                          ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "a file to write"}',
                       '{"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}',
                       '{"final": "notes.txt written"}', reflect("notes go in notes.txt")]}
    (home / "config.toml").write_text(f'workspace = "{ws}"\n')
    async with running(outputs, approvals="cli") as host:
        async def asked() -> bool:
            return bool(await host.store.read(queries.approvals))

        await until(asked)
        live = host.crew.live("dev")  # type: ignore[union-attr]
        assert live.state == "waiting" and live.task_id == task.id
        [approval] = await host.store.read(queries.approvals)
        proc = await asyncio.to_thread(subprocess.run, agentdeck_cmd("approve", str(approval.id)),
                                       env=subprocess_env(home), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        done = await finished(host, task.id)
        assert done.result == "notes.txt written" and (ws / "notes.txt").read_text() == "hello"


async def test_agents_work_at_the_same_time(running, db_path: Path) -> None:
    """Five tasks for five agents: their model calls overlap (from the recorded usage)."""
    with Store.open(db_path, AGENTS) as store:
        ids = [store.write(r.create_task, OWNER, f"job for {a}", owner=a).id for a in AGENTS]
    act = '{"action": "act", "reason": "mine"}'
    outputs = {a: [act, '{"final": "' + "done " * 30 + '"}', reflect(f"{a} did it")] for a in AGENTS}
    outputs["ops"] = [act, outputs["ops"][1], outputs["ops"][2]]
    async with running(outputs, step_s=0.005) as host:
        for task_id in ids:
            assert (await finished(host, task_id)).status == "done"
        usage = await host.store.read(lambda c: c.execute(
            "SELECT agent, ts - decode_s, ts FROM inference_usage").fetchall())
    spans = [(a, start, end) for a, start, end in usage]
    overlapping = {a for a, s, e in spans for b, s2, e2 in spans if a != b and s < e2 and s2 < e}
    assert len(overlapping) >= 3, spans


class FailingHeartbeats:
    """An agent loop's store whose next `left` heartbeat writes fail (as a full or broken
    disk would fail them): an error the loop does not handle, so the loop crashes."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.left = 0
        self.beats = 0  # heartbeats written since the last failure

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def write(self, reducer: object, *args: object, **kwargs: object) -> object:
        if reducer is r.heartbeat:
            if self.left:
                self.left, self.beats = self.left - 1, 0
                raise RuntimeError("disk I/O error (injected)")
            self.beats += 1
        return await self._store.write(reducer, *args, **kwargs)  # type: ignore[attr-defined]


async def test_the_supervisor_restarts_a_crashed_loop_and_stops_it_after_five(running, db_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crew_module, "BACKOFF_S", (0.01, 0.02))
    monkeypatch.setattr(crew_module, "HEARTBEAT_S", 0.02)
    async with running({"ops": ['{"final": "fine"}', reflect("ok")]}) as host:
        crew = host.crew
        assert crew is not None
        dev = crew.loops["dev"]
        failing = FailingHeartbeats(dev.store)
        monkeypatch.setattr(dev, "store", failing)
        failing.left = 1

        async def restarted() -> bool:  # crashed once, and beats again
            return len(dev.crashes) == 1 and failing.beats > 0

        await until(restarted)
        failing.left = 4  # four more in a row: five within the window

        async def stopped() -> bool:
            status = (await host.store.read(queries.agent_statuses)).get("dev")
            return status is not None and "stopped after 5 crashes" in status.detail

        await until(stopped)
        note = await host.store.read(lambda c: c.execute(
            "SELECT body FROM messages WHERE sender = 'dev' AND recipient = 'owner'").fetchall())
        assert note and "stopped after 5 crashes" in note[0][0]
        # The others keep working.
        task = await host.store.write(r.create_task, OWNER, "check the load", owner="ops")
        assert (await finished(host, task.id)).status == "done"


# A question for ops that the rules answer nothing of (no machine word: no triage by rule, no
# first step by rule), so every decision about it is the model's.
MODEL_ONLY_ASK = "Which programs are running right now?"


@pytest.mark.timeout(420)
def test_end_to_end_with_the_real_model(home: Path, ws: Path) -> None:
    """`agentdeck run --headless --until-idle` with the real model, on a task the rules do not
    answer: the model triages it, calls ops' tools or answers, and the task ends done with the
    model's final answer; the engine served a call for each of those decisions."""
    (home / "config.toml").write_text(f'workspace = "{ws}"\nschedules = []\n')
    task_id = int(ok(home, "send", "--to", "ops", MODEL_ONLY_ASK).strip())
    tools = parse_config("").agents["ops"].tools
    with Store.open(home / "agentdeck.db", AGENTS) as store:
        asked = store.read(queries.task, task_id)
    assert asked is not None and rules.triage_rule(asked, tools) is None and rules.first_step(asked, tools) is None
    proc = subprocess.run(agentdeck_cmd("run", "--headless", "--until-idle"), env=subprocess_env(home),
                          capture_output=True, text=True, timeout=time_left())
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Store.open(home / "agentdeck.db", AGENTS) as store:
        task = store.read(queries.task, task_id)
        assert task is not None and task.status == "done", (task, proc.stdout[-3000:])
        steps = model_work(store, task_id, tools)
    assert task.result and task.result.strip(), task  # the model's final answer
    assert steps[-1]["summary"] == shorten(task.result)
    events = [json.loads(line) for line in ok(home, "log", "--json").splitlines()]
    assert any(e["kind"] == "memory.written" and e["actor"] == "ops" for e in events)
    assert " triage: " in proc.stdout and "agentdeck stopped" in proc.stdout  # said in words


# --- memory ---


def test_recall_ranks_relevance_by_recency_and_importance(store: Store) -> None:
    from agents.crew.recall import recall, score

    now = 1_800_000_000.0
    old_big = store.write(r.write_memory, "dev", "the build uses ninja", importance=5)
    new_small = store.write(r.write_memory, "dev", "the build uses ninja, again", importance=1)
    fresh_big = store.write(r.write_memory, "dev", "the build uses ninja since monday", importance=5)
    day = 86_400.0
    store.conn.execute("UPDATE memory SET created_at = ? WHERE id = ?", (now - 60 * day, old_big.id))
    store.conn.execute("UPDATE memory SET created_at = ? WHERE id = ?", (now - day, new_small.id))
    store.conn.execute("UPDATE memory SET created_at = ? WHERE id = ?", (now - day, fresh_big.id))
    store.write(r.write_memory, "ops", "ops' private note about the build")  # not dev's to see
    ranked = store.read(recall, "build ninja", "dev", half_life_days=14, limit=3, now=now)
    assert [m.id for m in ranked] == [fresh_big.id, new_small.id, old_big.id]
    assert score(2.0, 0, 5, 100) == 2 * score(2.0, 100, 5, 100) == 5 * score(2.0, 0, 1, 100)


async def test_what_an_agent_remembers_reaches_its_prompt(running, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        store.write(r.write_memory, "dev", "the build uses ninja, not make", importance=4, scope="private")
        task = store.write(r.create_task, OWNER, "fix the build", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "ran ninja"}', reflect("ninja")]}
    async with running(outputs) as host:
        await finished(host, task.id)
        prompts = [q.messages[-1].content for q in host.backend.requests]  # type: ignore[attr-defined]
    assert "What you remember that may help:\n- the build uses ninja, not make" in prompts[0]


# --- cancellation ---


async def test_cancelling_a_parent_stops_its_running_child_and_kills_the_command(running, db_path: Path,
                                                                                 home: Path) -> None:
    import psutil

    marker = "987.125"
    with Store.open(db_path, AGENTS) as store:
        store.write(r.add_rule, OWNER, "dev", "run_shell", "sleep", "allow")
        root = store.write(r.create_task, OWNER, "build everything", owner="lead")
    outputs = {"lead": ['{"action": "delegate", "reason": "dev builds", "delegate_to": "dev"}'],
               "dev": [f'{{"tool": "run_shell", "arguments": {{"command": "sleep {marker}"}}}}']}
    async with running(outputs) as host:
        async def command_running() -> bool:
            calls = await host.store.read(queries.tool_calls, status="running")
            return any(c.tool == "run_shell" for c in calls)

        await until(command_running)

        async def process_seen() -> bool:  # the call is recorded as running just before it spawns
            return any(marker in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))

        await until(process_seen)
        out = await asyncio.to_thread(ok, home, "cancel", str(root.id))
        assert out.strip() == f"task {root.id} cancelled and 1 subtask(s) below it"

        async def stopped() -> bool:
            calls = await host.store.read(queries.tool_calls)
            return all(c.status != "running" for c in calls)

        await until(stopped)
        [call] = await host.store.read(queries.tool_calls)
        assert call.status == "denied" and "cancelled" in (call.result or "")
        tasks = {t.id: t for t in await host.store.read(queries.tasks)}
        assert {t.status for t in tasks.values()} == {"cancelled"}
        deadline = asyncio.get_running_loop().time() + 10
        while any(marker in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])):
            assert asyncio.get_running_loop().time() < deadline, "the command outlived its cancelled task"
            await asyncio.sleep(0.1)
    proc = await asyncio.to_thread(subprocess.run, agentdeck_cmd("cancel", str(root.id)), env=subprocess_env(home),
                                   capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "already cancelled" in proc.stderr


# --- schedules ---


def test_cron_schedules_fire_on_their_times_and_collapse_missed_runs(store: Store) -> None:
    from agents.protocol import SYSTEM

    s = store.write(r.set_schedule, OWNER, "ops", "weekdays", 60, cron="*/5 * * * *")
    assert s.cron == "*/5 * * * *" and s.interval_s == 300 and s.next_run_at % 300 == 0
    store.conn.execute("UPDATE schedules SET next_run_at = next_run_at - 3600 WHERE id = ?", (s.id,))
    store.write(r.fire_schedule, SYSTEM, s.id)
    after = store.read(queries.schedules)[0]
    assert after.next_run_at > after.last_run_at and after.next_run_at % 300 == 0  # one run, then the next slot
    with pytest.raises(Exception, match="not a cron expression"):
        store.write(r.set_schedule, OWNER, "ops", "bad", 60, cron="every tuesday")


async def test_the_default_health_check_needs_no_model_when_all_is_well(running, db_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.crew import rules

    monkeypatch.setattr(rules, "health_is_normal", lambda: (True, "cpu 3%, memory 40%, disk 50%"))
    async with running({}) as host:  # no scripted output: any model call would fail the task
        [schedule] = await host.store.read(queries.schedules)
        assert (schedule.agent, schedule.name, schedule.interval_s) == ("ops", "health", 300)
        await host.store.read(lambda c: c.execute("UPDATE schedules SET next_run_at = 1"))

        async def ran() -> bool:
            return bool(await host.store.read(queries.tasks, owner="ops"))

        await until(ran)
        [task] = await host.store.read(queries.tasks, owner="ops")
        done = await finished(host, task.id)
        assert done.status == "done" and "all normal (cpu 3%, memory 40%, disk 50%)" in (done.result or "")
        assert host.backend.requests == []  # type: ignore[attr-defined]


def test_schedules_from_the_cli_with_cron(home: Path) -> None:
    out = ok(home, "schedules", "add", "ops", "mornings", "--cron", "0 9 * * 1-5")
    assert "ops mornings on '0 9 * * 1-5'" in out
    proc = subprocess.run(agentdeck_cmd("schedules", "add", "ops", "x"), env=subprocess_env(home),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "either SECONDS or --cron" in proc.stderr


# --- a crash mid-step ---


@pytest.mark.timeout(120)
def test_kill_9_while_a_tool_runs_then_the_task_continues(db_path: Path, ws: Path, tmp_path: Path,
                                                          home: Path) -> None:
    import signal
    import sys
    import time

    import psutil
    from helpers import REPO

    marker = "765.375"
    with Store.open(db_path, AGENTS) as store:
        store.write(r.add_rule, OWNER, "dev", "run_shell", "sleep", "allow")
        task = store.write(r.create_task, OWNER, "build", owner="dev")

    def host(outputs: dict[str, list[str]]) -> subprocess.Popen[str]:
        script = tmp_path / f"script{time.monotonic_ns()}.json"
        script.write_text(json.dumps(outputs))
        return subprocess.Popen([sys.executable, str(REPO / "tests" / "crew_host.py"), str(db_path), str(ws),
                                 str(script)], env=subprocess_env(home), stdout=subprocess.PIPE, text=True)

    def running_calls() -> list:
        with Store.open(db_path, AGENTS) as store:
            return store.read(queries.tool_calls, status="running")

    first = host({"dev": ['{"action": "act", "reason": "mine"}',
                          f'{{"tool": "run_shell", "arguments": {{"command": "sleep {marker}"}}}}']})
    try:
        deadline = time.monotonic() + 30
        while not running_calls():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        [call] = running_calls()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        for p in psutil.process_iter(["cmdline"]):  # unsandboxed, the command outlives a kill -9
            if marker in " ".join(p.info["cmdline"] or []):
                p.kill()
    second = host({"dev": ['{"action": "act", "reason": "mine, again"}', '{"final": "built after a restart"}',
                           reflect("a build can be interrupted")]})
    try:
        assert second.stdout is not None
        assert second.stdout.readline().strip() == f"INTERRUPTED {call.id}"
        assert second.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + 30
        while True:
            with Store.open(db_path, AGENTS) as store:
                now = store.read(queries.task, task.id)
                calls = store.read(queries.tool_calls)
            if now is not None and now.status == "done":
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
        assert now.result == "built after a restart" and now.attempts == 2
        assert [(c.id, c.status) for c in calls] == [(call.id, "interrupted")]  # never run again
        assert "not run again" in (calls[0].result or "")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0



async def test_past_the_threshold_scribe_compacts_an_agents_oldest_reflections(db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        old = [store.write(r.write_memory, "dev", f"lesson {i} about builds", kind="reflection", importance=i % 5 + 1)
               for i in range(4)]
        task = store.write(r.create_task, OWNER, "one more build", owner="dev")
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\nmemory_compact_at = 4\n')
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "built"}', reflect("the fifth lesson")],
               "scribe": ['{"summary": "builds: lessons 0 and 1, summarised"}']}
    backend = ScriptedBackend(queued(outputs))
    timeouts: dict[str, list[float]] = {}
    submit = backend.submit

    def recording_submit(*args: Any, **kwargs: Any) -> Any:
        timeouts.setdefault(kwargs["agent"], []).append(kwargs.get("timeout_s") or 0.0)
        return submit(*args, **kwargs)

    backend.submit = recording_submit  # type: ignore[method-assign]
    async with Host(db_path, config, backend=backend, crew=True) as host:
        await finished(host, task.id)

        async def compacted() -> bool:
            rows_ = await host.store.read(lambda c: c.execute(
                "SELECT id FROM memory WHERE kind = 'summary'").fetchall())
            return bool(rows_)

        await until(compacted)
        memories = {m.id: m for m in await host.store.read(
            lambda c: [rows.memory(row) for row in c.execute("SELECT * FROM memory")])}
    [summary] = [m for m in memories.values() if m.kind == "summary"]
    assert (summary.agent, summary.content) == ("dev", "builds: lessons 0 and 1, summarised")
    assert [m.compacted_into for m in (memories[old[0].id], memories[old[1].id])] == [summary.id, summary.id]
    assert memories[old[2].id].compacted_into is None  # only the oldest half
    scribe_asked = [q for q in backend.requests if q.agent == "scribe"]
    assert "lesson 0 about builds" in scribe_asked[0].messages[-1].content
    # The summary's deadline is derived like every call's (timeout_s 0 means "derive", not 0 s)
    assert [0 < t < config.inference.max_call_s for t in timeouts["scribe"]] == [True]


@pytest.mark.timeout(420)
async def test_with_the_real_model_three_agents_generate_at_the_same_time(db_path: Path, ws: Path) -> None:
    """Concurrency is real: three agents' model calls overlap in the engine (from the
    recorded usage: each call's decode span), and every task ends (done or failed)."""
    from agents.inference import Engine

    # defer_s = 1: the model may defer a task (its choice); it then comes back at once and is
    # worked the second time, so every task still ends.
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\ndefer_s = 1\n')
    asks = {"dev": "Write a one-line summary of what a Makefile is for.",
            "review": "Say whether 'x = x + 1' is idiomatic Python.",
            "scribe": "Write a one-sentence journal entry for today."}
    with Store.open(db_path, AGENTS) as store:
        ids = [store.write(r.create_task, OWNER, text, owner=agent).id for agent, text in asks.items()]
    engine = Engine(config.inference)
    async with Host(db_path, config, backend=engine, crew=True) as host:
        assert host.crew is not None

        async def all_ended() -> bool:  # not wait_idle: a deferred task counts as idle
            found = [await host.store.read(queries.task, i) for i in ids]
            return all(t is not None and t.status in ("done", "failed") for t in found)

        await until(all_ended, within=360)
        tasks = [await host.store.read(queries.task, i) for i in ids]
        usage = await host.store.read(lambda c: c.execute(
            "SELECT agent, ts - decode_s, ts FROM inference_usage WHERE decode_s > 0").fetchall())
    assert all(t is not None and t.status in ("done", "failed") for t in tasks), tasks
    overlapping = {a for a, s, e in usage for b, s2, e2 in usage if a != b and s < e2 and s2 < e}
    assert len(overlapping) >= 2, usage
