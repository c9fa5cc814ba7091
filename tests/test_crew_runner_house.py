"""The runner and the crew keep their house: the health rule never blocks the event loop,
finished routing jobs are let go, the rules-first checks are plain functions."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from scripted_backend import PIECE_CHARS, ScriptedBackend, queued

from agents.config import parse_config
from agents.crew import rules
from agents.crew.harness import DEFAULT, Harness
from agents.crew.runner import PHASE_TOKENS
from agents.crew.schemas import CUT_MARK, ToolStep, Triage, closed_final
from agents.protocol import OWNER, AgentStepped, AgentTriaged, Task
from agents.runtime import Host
from agents.store import queries
from agents.store import reducers as r


def host_for(db_path: Path, tmp_path: Path, outputs: dict[str, list[str]] | None = None,
             harness: Harness = DEFAULT) -> Host:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    backend = ScriptedBackend(queued(outputs or {}))
    return Host(db_path, config, backend=backend, crew=True, harness=harness)  # type: ignore[arg-type]


def task(title: str, body: str = "", *, parent_id: int | None = None, created_by: str = OWNER) -> Task:
    return Task(id=7, parent_id=parent_id, job_id=7, owner="ops", created_by=created_by, title=title,
                body=body, status="active", priority=1, result=None, attempts=0, deadline=None,
                created_at=0.0, updated_at=0.0)


async def wait_for(check: Callable[[], object], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- the health rule runs off the event loop ---


@pytest.mark.timeout(60)
async def test_the_health_rule_does_not_block_the_event_loop(db_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil's cpu_percent(interval=0.2) sleeps 0.2 s: the loop must keep ticking meanwhile."""
    real = rules.health_is_normal
    spans: list[tuple[float, float]] = []

    def measured() -> tuple[bool, str]:
        started = time.monotonic()
        try:
            return real()  # the real psutil reading, 0.2 s of it
        finally:
            spans.append((started, time.monotonic()))

    monkeypatch.setattr(rules, "health_is_normal", measured)
    ticks: list[float] = []

    async def probe() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async with host_for(db_path, tmp_path) as host:
        prober = asyncio.create_task(probe())
        try:
            await host.store.write(r.create_task, OWNER, "[health] scheduled check", owner="ops")
            await wait_for(lambda: asyncio.sleep(0, result=bool(spans)))
        finally:
            prober.cancel()
    [(start, end)] = spans
    assert end - start >= 0.15  # it did block its thread for the interval
    during = [t for t in ticks if start <= t <= end]
    around = [t for t in ticks if t <= start][-1:] + during + [t for t in ticks if t >= end][:1]
    longest = max(b - a for a, b in itertools.pairwise(around))
    assert len(during) >= 3 and longest < 0.12, (len(during), longest)


# --- the rules-first checks, as plain functions ---

OPS = ["system_health", "read_log"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("title, tools, step", [
    ("report disk usage", OPS, ToolStep(tool="system_health", arguments={})),
    ("what happened to task #12?", OPS, ToolStep(tool="read_log", arguments={"task": 12})),
    ("what went wrong overnight", ["read_log"], ToolStep(tool="read_log", arguments={"last": 40})),
    ("report disk usage", ["read_log"], None),  # cannot look at the machine: the model decides
    ("write a haiku", OPS, None),
    ("Which process uses the most memory?", ["system_health", "list_processes"],
     ToolStep(tool="list_processes", arguments={"sort": "memory"})),
    ("which processes use the most cpu", ["system_health", "list_processes"],
     ToolStep(tool="list_processes", arguments={"sort": "cpu"})),
    ("Which process uses the most memory?", ["system_health"], ToolStep(tool="system_health", arguments={})),
])
def test_the_first_step_by_rules(title: str, tools: list[str], step: ToolStep | None) -> None:
    assert rules.first_step(task(title), tools) == step


@pytest.mark.timeout(10)
def test_triage_by_rules() -> None:
    delegated = rules.triage_rule(task("write a haiku", parent_id=3, created_by="lead"), [])
    assert delegated is not None and (delegated.action, delegated.reason) == ("act", "a subtask delegated to me")
    assert rules.triage_rule(task("write a haiku", parent_id=3), OPS) is None  # the person's own subtask
    machine = rules.triage_rule(task("is swap full?"), OPS)
    assert machine is not None and "this machine" in machine.reason
    assert rules.triage_rule(task("is swap full?"), ["read_log"]) is None
    assert rules.is_health_check(task("[health] every 5 min"), OPS)
    assert not rules.is_health_check(task("[health] every 5 min"), ["read_log"])
    assert not rules.is_health_check(task("health [health]"), OPS)
    assert rules.health_triage(False, "disk 97%") == Triage(
        action="act", reason="health check: something is abnormal (disk 97%)")
    assert rules.health_triage(True, "disk 9%").action == "ignore"


@pytest.mark.timeout(60)
async def test_without_rules_first_the_model_triages_and_takes_the_first_step(db_path: Path,
                                                                            tmp_path: Path) -> None:
    """The ablation switch still holds: a machine question goes to the model, not the rules
    (whose first step is a look: the evidence rule still offers no final answer before one)."""
    outputs = {"ops": ['{"action": "act", "reason": "the model says so"}',
                       '{"tool": "list_processes", "arguments": {}}', '{"final": "looked"}',
                       '{"outcome": "success", "lesson": "", "importance": 1, "tags": []}']}
    async with host_for(db_path, tmp_path, outputs, Harness(rules_first=False)) as host:
        t = await host.store.write(r.create_task, OWNER, "report disk usage", owner="ops")

        async def ended() -> bool:
            now = await host.store.read(queries.task, t.id)
            return now is not None and now.status in ("done", "failed")

        await wait_for(ended)
        events = await host.store.read(queries.events_after, 0, 10_000)
    [triaged] = [e.payload for e in events if isinstance(e.payload, AgentTriaged)]
    steps = [e.payload for e in events if isinstance(e.payload, AgentStepped)]
    assert (triaged.by, triaged.reason) == ("model", "the model says so")
    assert [(s.tool, s.status) for s in steps] == [("list_processes", "ok"), (None, "final")]


# --- working a task: the first run and the combine share one frame ---


@pytest.mark.timeout(60)
async def test_a_combine_that_fails_fails_the_parent_and_leaves_the_agent_idle(db_path: Path,
                                                                                tmp_path: Path) -> None:
    """The combine's model call errors (lead's script ran out): the parent fails saying
    why, the child's work stands, and lead is idle with the time counted."""
    outputs = {"lead": ['{"action": "delegate", "reason": "dev edits files", "delegate_to": "dev"}'],
               "dev": ['{"final": "wrote the entry"}',
                       '{"outcome": "success", "lesson": "", "importance": 1, "tags": []}']}
    async with host_for(db_path, tmp_path, outputs) as host:
        root = await host.store.write(r.create_task, OWNER, "add a changelog entry", owner="lead")

        async def parent_ended() -> bool:
            now = await host.store.read(queries.task, root.id)
            return now is not None and now.status in ("done", "failed")

        await wait_for(parent_ended)
        parent = await host.store.read(queries.task, root.id)
        [child] = [t for t in await host.store.read(queries.tasks) if t.parent_id == root.id]
        assert host.crew is not None
        lead = host.crew.live("lead")

        async def lead_idle() -> bool:
            status = (await host.store.read(queries.agent_statuses)).get("lead")
            return status is not None and status.state == "idle"

        await wait_for(lead_idle)
    assert parent is not None and parent.status == "failed"
    assert (parent.result or "").startswith("combine: the model call ended with error"), parent.result
    assert (child.status, child.result) == ("done", "wrote the entry")
    assert (lead.state, lead.task_id, lead.phase) == ("idle", None, "")
    assert lead.work_s > 0


# --- the crew lets finished routing jobs go ---


def held_jobs(crew: object) -> list[asyncio.Task]:
    """Every asyncio task the crew keeps, whatever the collection is called."""
    held: list[asyncio.Task] = []
    for value in vars(crew).values():
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list | set | tuple):
            held += [job for job in value if isinstance(job, asyncio.Task)]
    return held


@pytest.mark.timeout(60)
async def test_the_crew_keeps_no_finished_routing_job(db_path: Path, tmp_path: Path) -> None:
    async with host_for(db_path, tmp_path) as host:
        crew = host.crew
        assert crew is not None
        for loop in crew.loops.values():
            loop.pause(True)  # the routed tasks wait: this test is about routing only
        held_before = len(held_jobs(crew))
        ids = [(await host.store.write(r.create_task, OWNER, f"@dev job {i}")).id for i in range(20)]

        async def all_routed() -> bool:
            tasks = [await host.store.read(queries.task, i) for i in ids]
            return all(t is not None and t.owner == "dev" for t in tasks)

        await wait_for(all_routed)

        async def let_go() -> bool:
            return not [job for job in held_jobs(crew) if job.done()]

        await wait_for(let_go, within=5)
        assert len(held_jobs(crew)) == held_before  # the supervisors, the dispatcher, the deferred waker


# --- the task flows on what task.created carries ---


def count_task_reads(store: object, task_id: int) -> list[int]:
    """Wraps the store's read (the instance the crew and every runner read through): the
    returned list grows by one for each `queries.task` read of `task_id`. The test itself
    reads through `store.unwrapped_read`, uncounted."""
    reads: list[int] = []
    real = store.read  # type: ignore[attr-defined]

    async def read(query: Callable[..., object], *args: object, **kwargs: object) -> object:
        if query is queries.task and args[:1] == (task_id,):
            reads.append(task_id)
        return await real(query, *args, **kwargs)

    store.unwrapped_read = real  # type: ignore[attr-defined]
    store.read = read  # type: ignore[attr-defined]
    return reads


@pytest.mark.timeout(60)
@pytest.mark.parametrize("title, owner, most", [
    ("write a haiku about tea", "dev", 1),  # the runner's one read, before it claims the task
    # Routed: read fresh before routing (it may have been assigned since the event), then
    # placed as the assignment wrote it; its task.assigned finds it held and reads nothing.
    ("@dev write a haiku about tea", None, 2),
])
async def test_a_created_task_is_read_at_most_once_before_its_first_model_call(
        db_path: Path, tmp_path: Path, title: str, owner: str | None, most: int) -> None:
    """task.created carries the whole task: the dispatcher and the loop hand it on, and the
    runner reads it once, to see whether someone cancelled or took it before it claims it
    (before: 2 reads, and 3 for a routed task)."""
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "a haiku"}',
                       '{"outcome": "success", "lesson": "", "importance": 1, "tags": []}']}
    async with host_for(db_path, tmp_path, outputs) as host:
        backend = host.backend
        next_id = len(await host.store.read(queries.tasks)) + 1
        reads = count_task_reads(host.store, next_id)
        at_first_call: list[int] = []
        real_submit = backend.submit

        def submit(*args: object, **kwargs: object) -> object:
            if kwargs.get("agent") == "dev" and not at_first_call:
                at_first_call.append(len(reads))
            return real_submit(*args, **kwargs)

        backend.submit = submit  # type: ignore[method-assign]
        t = await host.store.write(r.create_task, OWNER, title, owner=owner)
        assert t.id == next_id

        async def ended() -> bool:
            now = await host.store.unwrapped_read(queries.task, t.id)  # type: ignore[attr-defined]
            return now is not None and now.status in ("done", "failed")

        await wait_for(ended)
        done = await host.store.unwrapped_read(queries.task, t.id)  # type: ignore[attr-defined]
    assert done is not None and (done.status, done.result) == ("done", "a haiku")
    assert at_first_call == [most], at_first_call


@pytest.mark.timeout(10)
def test_a_task_naming_a_workspace_file_starts_by_reading_it(tmp_path: Path) -> None:
    (tmp_path / "change.diff").write_text("+x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    read = ["read_file", "write_file"]
    assert rules.first_step(task("Review change.diff: which line has a bug?"), read, tmp_path) == ToolStep(
        tool="read_file", arguments={"path": "change.diff"})
    assert rules.first_step(task("count the words in sub/a.txt"), read, tmp_path) == ToolStep(
        tool="read_file", arguments={"path": "sub/a.txt"})
    assert rules.first_step(task("Create notes.txt containing hello"), read, tmp_path) is None  # not there yet
    assert rules.first_step(task("read ../etc.passwd"), read, tmp_path) is None  # outside: not named here
    assert rules.first_step(task("Review change.diff"), ["write_file"], tmp_path) is None  # cannot read


# --- a reply cut by its token cap ---

ASK = "Which programs are running right now?"  # no rule triages it: every decision is the model's
# What SmolLM2 did once in CI: a final answer that repeats itself until the cap cuts it.
LOOPING = '{"final": "' + "2017-06-24 15:39:58 Tue, " * 200 + '"}'
# A tool call cut inside its arguments: nothing to run, nothing to guess.
LONG_CALL = '{"tool": "run_shell", "arguments": {"command": "echo ' + "a" * 5000 + '"}}'
STEP_CAP = min(parse_config("").agents["ops"].inference.max_tokens, PHASE_TOKENS["step"])
CUT_NOTE = (f"Your last reply ran past its {STEP_CAP}-token limit and was cut before it ended. "
            "Reply again, far shorter.")


async def cut_run(db_path: Path, tmp_path: Path, harness: Harness, *outputs: str) -> tuple[Task, list]:
    script = {"ops": ['{"action": "act", "reason": "a machine question"}',
                      '{"tool": "list_processes", "arguments": {}}', *outputs,
                      '{"outcome": "success", "lesson": "", "importance": 1, "tags": []}']}
    async with host_for(db_path, tmp_path, script, harness) as host:
        t = await host.store.write(r.create_task, OWNER, ASK, owner="ops")
        await wait_for(lambda: ended(host, t.id))
        done = await host.store.read(queries.task, t.id)
        steps = [q for q in host.backend.requests if q.schema and "anyOf" in q.schema]  # type: ignore[attr-defined]
    assert done is not None
    return done, steps


async def ended(host: Host, task_id: int) -> bool:
    now = await host.store.read(queries.task, task_id)
    return now is not None and now.status in ("done", "failed")


@pytest.mark.timeout(60)
async def test_a_final_answer_cut_by_its_cap_is_kept_as_far_as_it_went(db_path: Path, tmp_path: Path) -> None:
    done, steps = await cut_run(db_path, tmp_path, DEFAULT, LOOPING)
    kept = LOOPING[len('{"final": "'):][:STEP_CAP * PIECE_CHARS - len('{"final": "')]  # the scripted cap
    assert (done.status, done.result) == ("done", kept.rstrip() + CUT_MARK)
    assert len(steps) == 2  # the look, then the cut answer: no retry


@pytest.mark.timeout(60)
async def test_a_tool_call_cut_by_its_cap_is_retried_with_the_model_told_so(db_path: Path,
                                                                          tmp_path: Path) -> None:
    done, steps = await cut_run(db_path, tmp_path, DEFAULT, LONG_CALL, '{"final": "python and sqlite run"}')
    assert (done.status, done.result) == ("done", "python and sqlite run")
    cut, retried = steps[-2], steps[-1]
    assert CUT_NOTE not in cut.messages[-1].content
    assert retried.messages[:-1] == cut.messages[:-1]  # only the last turn says it
    assert retried.messages[-1].content == f"{cut.messages[-1].content}\n\n{CUT_NOTE}"


@pytest.mark.timeout(60)
async def test_without_the_lever_a_cut_answer_is_retried_blind_and_a_second_cut_fails_naming_the_cap(
        db_path: Path, tmp_path: Path) -> None:
    done, steps = await cut_run(db_path, tmp_path, Harness(cut_replies=False), LOOPING, LOOPING)
    assert done.status == "failed"
    assert done.result == (f"step 2: the model's output did not parse twice (cut at its {STEP_CAP}-token "
                           "limit: not JSON: Input data was truncated)")
    assert steps[-1].messages == steps[-2].messages


@pytest.mark.parametrize(("text", "closed"), [
    ('{"final": "the disk is 4', {"final": "the disk is 4" + CUT_MARK}),
    ('  {"final":"tab\\there \\u00e9 and a cut \\u00', {"final": "tab\there \u00e9 and a cut" + CUT_MARK}),
    ('{"final": "ends on a lone backslash \\', {"final": "ends on a lone backslash" + CUT_MARK}),
    ('{"final": "said", "extra": "x', None),  # closed and went on: not cut inside the answer
    ('{"tool": "run_shell", "arguments": {"command": "ls', None),  # a cut call is not guessed at
    ('{"action": "act", "reason": "becau', None),
])
def test_closing_a_cut_final_answer(text: str, closed: dict | None) -> None:
    made = closed_final(text)
    assert (json.loads(made) if made else None) == closed


def test_the_cut_note_ends_the_last_user_turn_or_is_one() -> None:
    from agents.crew.prompts import told_it_was_cut
    from agents.inference.types import ChatMessage

    user = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="do it")]
    told = told_it_was_cut(user, 96)
    assert [m.role for m in told] == ["system", "user"] and told[1].content.startswith("do it\n\n")
    after_assistant = [*user, ChatMessage(role="assistant", content="{}")]
    told = told_it_was_cut(after_assistant, 96)
    assert [m.role for m in told] == ["system", "user", "assistant", "user"] and "96-token" in told[-1].content
