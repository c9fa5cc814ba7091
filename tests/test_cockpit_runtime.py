"""What the cockpit's deck screen leans on, as plain code: the approval queue's order,
the frame pacer, the log export (no terminal, no textual)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from helpers import AGENTS

from agents.protocol import OWNER, Approval
from agents.runtime.approval_queue import ApprovalQueue, decision_for, what_became_of
from agents.runtime.log_export import export_log
from agents.runtime.pacing import FramePacer
from agents.store import AsyncStore, Store, queries
from agents.store import reducers as r


def approval(id: int, *, expires_at: float = 1000.0, status: str = "pending",
             decided_by: str | None = None) -> Approval:
    return Approval(id=id, agent="dev", task_id=None, tool_call_id=None, tool="read_file", arguments={},
                    resolved="/x", reason="", status=status, decided_by=decided_by, scope=None,
                    created_at=0.0, expires_at=expires_at, decided_at=None)


# --- the approval queue ---


def test_approvals_are_shown_one_at_a_time_in_id_order_whatever_order_they_are_read_in() -> None:
    queue = ApprovalQueue()
    assert queue.update([approval(3), approval(1), approval(2)], now=0.0) is None
    assert [a.id for a in queue.pending] == [1, 2, 3]
    assert queue.take_next().id == 1  # type: ignore[union-attr]
    assert queue.take_next() is None  # one on screen: no other replaces it
    queue.update([approval(0), approval(1)], now=0.0)  # a lower id arrives: still not shown over it
    assert queue.take_next() is None and queue.on_screen == 1


def test_one_put_off_waits_until_asked_for_and_a_decided_one_leaves_the_queue() -> None:
    queue = ApprovalQueue()
    queue.update([approval(1), approval(2)], now=0.0)
    first = queue.take_next()
    assert first is not None
    queue.closed(first.id, put_off=True)  # Esc
    assert queue.take_next().id == 2  # type: ignore[union-attr]
    queue.closed(2, put_off=False)  # decided
    queue.decided(2)
    assert [a.id for a in queue.pending] == [1]
    assert queue.take_next() is None  # the put-off one is not pushed at the person again
    assert queue.ask_again()  # F7
    assert queue.take_next().id == 1  # type: ignore[union-attr]
    queue.closed(1, put_off=False)
    queue.decided(1)
    assert not queue.ask_again()  # nothing pending


def test_the_one_on_screen_is_reported_gone_once_decided_elsewhere_or_past_its_time() -> None:
    queue = ApprovalQueue()
    queue.update([approval(1, expires_at=100.0), approval(2, expires_at=500.0)], now=0.0)
    queue.take_next()
    assert queue.update([approval(1, expires_at=100.0), approval(2, expires_at=500.0)], now=99.0) is None
    # Nobody has marked it expired: its time alone ends it.
    assert queue.update([approval(1, expires_at=100.0), approval(2, expires_at=500.0)], now=100.0) == 1
    assert [a.id for a in queue.pending] == [2]
    assert queue.update([approval(2, expires_at=500.0)], now=100.0) == 1  # until it leaves the screen
    queue.closed(1, put_off=False)
    assert queue.update([], now=100.0) is None


def test_the_modal_answers_map_to_a_decision_and_a_gone_one_says_what_became_of_it() -> None:
    assert decision_for("once") == (True, "once")
    assert decision_for("session") == (True, "session")
    assert decision_for("always") == (True, "always")
    assert decision_for("deny") == (False, "once")
    assert what_became_of(4, None) == "approval 4 is gone"
    assert what_became_of(4, approval(4, status="expired")) == "approval 4 expired"
    assert what_became_of(4, approval(4, status="approved", decided_by="user")) == \
        "approval 4 approved by user in another terminal"
    assert what_became_of(4, approval(4, status="denied", decided_by="policy")) == "approval 4 denied by policy"


# --- frame pacing ---


class Clocks:
    """A wall clock and a thread-CPU clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def second(self, cpu_share: float) -> None:
        self.wall += 1.0
        self.cpu += cpu_share


def drawn(pacer: FramePacer, ticks: int) -> int:
    return sum(pacer.frame() for _ in range(ticks))


def test_the_pacer_skips_frames_over_budget_down_to_a_quarter_and_recovers_under_half_of_it() -> None:
    clocks = Clocks()
    pacer = FramePacer(0.2, 3, wall=lambda: clocks.wall, cpu=lambda: clocks.cpu)
    assert drawn(pacer, 12) == 12  # within the second: every frame
    for expected in (1, 2, 3, 3):  # each costly second skips one more, never past 3
        clocks.second(0.5)
        pacer.frame()
        assert pacer.skipping == expected
    assert drawn(pacer, 400) == 100  # a quarter of the rate
    clocks.second(0.15)  # under budget but not well under it: stays
    pacer.frame()
    assert pacer.skipping == 3
    for expected in (2, 1, 0, 0):
        clocks.second(0.05)
        pacer.frame()
        assert pacer.skipping == expected


# --- log export ---


async def test_the_exported_log_is_private_and_its_lines_carry_no_terminal_escapes(
        db_path: Path, home: Path) -> None:
    hostile = "rm -rf ~ \x1b[2J\x1b]0;pwned\x07 \u202egnp.exe"
    with Store.open(db_path, AGENTS) as store:
        store.write(r.post_message, OWNER, "general", hostile)
    old = os.umask(0o022)  # a usual umask: a plain write would leave the file 0644
    store = AsyncStore(db_path, list(AGENTS))
    await store.open()
    try:
        path = await export_log(store, home, when=1_800_000_000.0)
        events = await store.read(queries.events_after, 0, 10_000)
    finally:
        await store.close()
        os.umask(old)
    assert path.parent == home / "exports" and path.name.startswith("log-") and path.suffix == ".jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_text()
    assert "\x1b" not in raw and "\x07" not in raw and "\u202e" not in raw
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["id"] for line in lines] == [e.id for e in events]
    posted = next(line for line in lines if line["kind"] == "message.posted")
    assert posted["payload"]["message"]["body"] == hostile  # escaped for terminals, exact for parsers
