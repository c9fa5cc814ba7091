"""The gate in-process: one decision per call, and a waiting call woken by the
`approval.decided` event (from another process or another connection), not by reading
the approval row on a timer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers import AGENTS, finished, ok, reflect, until
from scripted_backend import ScriptedBackend, queued

import agents.gate as gate_module
from agents.bus import Bus
from agents.config import Config, parse_config
from agents.gate import Gate
from agents.protocol import OWNER, Approval
from agents.runtime import Host
from agents.store import AsyncStore, Store, queries
from agents.store import reducers as r

WRITE = {"path": "notes.txt", "content": "hello"}  # dev's write_file asks by default


@pytest.fixture
def config(home: Path, ws: Path) -> Config:
    text = f'workspace = "{ws}"\n'
    (home / "config.toml").write_text(text)  # the same config for `agentdeck approve`
    return parse_config(text)


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of the policy function the gate decides with: (agent tool) each time."""
    made: list[str] = []
    real = gate_module.decide

    def counted(policy: Any, agent: str, tool: str, arguments: Any) -> Any:
        made.append(f"{agent} {tool}")
        return real(policy, agent, tool, arguments)

    monkeypatch.setattr(gate_module, "decide", counted)
    return made


@pytest.fixture
def approval_reads(astore: AsyncStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of every read of one approval row through the gate's store."""
    reads: list[int] = []
    real = astore.read

    async def counted(query: Any, *args: Any, **kwargs: Any) -> Any:
        if query is queries.approval:
            reads.append(args[0])
        return await real(query, *args, **kwargs)

    monkeypatch.setattr(astore, "read", counted)
    return reads


class Asked:
    """on_ask that only records the question: someone else answers it."""

    def __init__(self) -> None:
        self.approval: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()

    async def __call__(self, approval: Approval) -> None:
        self.approval.set_result(approval)


@pytest.mark.timeout(30)
async def test_an_allowed_call_is_decided_once(astore: AsyncStore, config: Config, home: Path, ws: Path,
                                               decisions: list[str]) -> None:
    (ws / "a.txt").write_text("a")
    outcome = await Gate(astore, config, home).call("dev", "read_file", {"path": "a.txt"})
    assert outcome.decision.decision == "allow" and outcome.result.status == "ok"
    assert decisions == ["dev read_file"]


@pytest.mark.timeout(30)
async def test_an_asked_then_approved_call_is_decided_once(astore: AsyncStore, config: Config, home: Path,
                                                           ws: Path, decisions: list[str]) -> None:
    waited: list[str] = []

    async def approve(approval: Approval) -> None:
        await astore.write(r.decide_approval, OWNER, approval.id, True)

    async def waiting() -> None:
        waited.append("waiting")

    outcome = await Gate(astore, config, home).call("dev", "write_file", WRITE, on_ask=approve,
                                                   on_waiting=waiting)
    assert outcome.decision.decision == "ask" and outcome.result.status == "ok"
    assert outcome.approval is not None and outcome.approval.status == "approved"
    assert decisions == ["dev write_file"] and waited == ["waiting"]
    assert (ws / "notes.txt").read_text() == "hello"


@pytest.mark.timeout(60)
async def test_approve_from_another_process_wakes_the_call_without_polling(
        astore: AsyncStore, config: Config, home: Path, ws: Path, approval_reads: list[int]) -> None:
    """No host: the gate waits on a Bus of its own. `agentdeck approve` takes far longer
    than 0.2 s to start, so a poll would have read the row many times."""
    asked = Asked()
    call = asyncio.create_task(Gate(astore, config, home).call("dev", "write_file", WRITE, on_ask=asked))
    approval = await asyncio.wait_for(asked.approval, 20)
    await asyncio.to_thread(ok, home, "approve", str(approval.id))
    outcome = await asyncio.wait_for(call, 20)
    assert outcome.result.status == "ok" and (ws / "notes.txt").read_text() == "hello"
    # Once before waiting, once when the event came.
    assert approval_reads == [approval.id, approval.id]


@pytest.mark.timeout(60)
async def test_the_hosts_bus_carries_a_decision_from_another_connection(
        astore: AsyncStore, config: Config, home: Path, db_path: Path, ws: Path,
        approval_reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    bus = await Bus(astore).start()
    try:
        def no_bus_of_its_own(*_: object) -> None:
            raise AssertionError("the gate started a Bus of its own beside the host's")

        monkeypatch.setattr(gate_module, "Bus", no_bus_of_its_own)
        asked = Asked()
        call = asyncio.create_task(Gate(astore, config, home, bus=bus).call("dev", "write_file", WRITE,
                                                                           on_ask=asked))
        approval = await asyncio.wait_for(asked.approval, 20)

        def deny_elsewhere() -> None:
            with Store.open(db_path, AGENTS) as other:
                other.write(r.decide_approval, OWNER, approval.id, False)

        await asyncio.sleep(0.5)  # long enough for a 0.2 s poll to show in the reads
        await asyncio.to_thread(deny_elsewhere)
        outcome = await asyncio.wait_for(call, 20)
        assert outcome.result.text == "not approved: denied" and not (ws / "notes.txt").exists()
        assert approval_reads == [approval.id, approval.id]
    finally:
        await bus.close()


@pytest.mark.timeout(30)
async def test_an_unanswered_wait_on_the_bus_still_expires(astore: AsyncStore, home: Path, ws: Path,
                                                           approval_reads: list[int]) -> None:
    config = parse_config(f'workspace = "{ws}"\napproval_timeout_s = 1\n')
    bus = await Bus(astore).start()
    try:
        outcome = await asyncio.wait_for(Gate(astore, config, home, bus=bus).call("dev", "write_file", WRITE), 20)
        assert outcome.result.text == "not approved: expired unanswered (timeout)"
        assert outcome.approval is not None and outcome.approval.decided_by == "timeout"
        assert len(approval_reads) <= 4  # at the start, at the deadline (and its expiry): no timer
    finally:
        await bus.close()


@pytest.mark.timeout(60)
async def test_the_crews_asked_step_is_decided_once_and_waits_on_the_hosts_bus(
        db_path: Path, ws: Path, decisions: list[str]) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    outputs = {"dev": ['{"action": "act", "reason": "a file to write"}',
                       '{"tool": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}',
                       '{"final": "notes.txt written"}', reflect("notes go in notes.txt")]}
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    async with Host(db_path, config, backend=ScriptedBackend(queued(outputs)), approvals="cli",  # type: ignore[arg-type]
                    crew=True) as host:
        assert host.crew is not None and host.crew.loops["dev"].gate.bus is host.bus

        async def asked() -> bool:
            return bool(await host.store.read(queries.approvals))

        await until(asked)
        assert host.crew.live("dev").state == "waiting"  # said before the question was written
        [approval] = await host.store.read(queries.approvals)
        with Store.open(db_path, AGENTS) as other:
            other.write(r.decide_approval, OWNER, approval.id, True)
        done = await finished(host, task.id)
        assert done.result == "notes.txt written" and (ws / "notes.txt").read_text() == "hello"
    assert decisions == ["dev write_file"]
