"""Which approval the person is shown next, and which are gone: the cockpit's approval
queue as plain state, so the order is tested without a terminal.

Pending approvals are shown one at a time in id order. One on screen is never replaced
by a newer one; one the person put off (Esc) waits until they ask for it again (F7);
one decided elsewhere or past its time must leave the screen at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.protocol import Approval, ApprovalScope

# The modal's answers that decide (the rest leave the approval pending).
SCOPES: dict[str, ApprovalScope] = {"once": "once", "session": "session", "always": "always"}


class ApprovalQueue:
    def __init__(self) -> None:
        self.pending: list[Approval] = []  # id order, none past its time
        self.on_screen: int | None = None  # the approval the person is being shown
        self.later: set[int] = set()  # put off (Esc): not shown again until asked for

    def update(self, approvals: Iterable[Approval], now: float) -> int | None:
        """Take a fresh read of the pending approvals. Returns the id of the one on
        screen if it is no longer pending (decided elsewhere, or its time ran out)."""
        # One past its time is over: the instance marks it expired on its next pass.
        self.pending = sorted((a for a in approvals if a.status == "pending" and a.expires_at > now),
                              key=lambda a: a.id)
        if self.on_screen is not None and all(a.id != self.on_screen for a in self.pending):
            return self.on_screen
        return None

    def take_next(self) -> Approval | None:
        """The approval to show now (marked on screen), or None: one is already shown,
        or every pending one was put off."""
        if self.on_screen is not None:
            return None
        approval = next((a for a in self.pending if a.id not in self.later), None)
        if approval is not None:
            self.on_screen = approval.id
        return approval

    def closed(self, approval_id: int, *, put_off: bool) -> None:
        """The one on screen left it; `put_off`: it stays pending, not shown again for now."""
        if put_off:
            self.later.add(approval_id)
        self.on_screen = None

    def decided(self, approval_id: int) -> None:
        """Decided here: out of the queue before the next read confirms it."""
        self.pending = [a for a in self.pending if a.id != approval_id]

    def ask_again(self) -> bool:
        """The person asks to decide now: the first pending one may be shown again.
        False when nothing is pending."""
        if not self.pending:
            return False
        self.later.discard(self.pending[0].id)
        return True


def decision_for(answer: str) -> tuple[bool, ApprovalScope]:
    """A deciding answer of the modal as (approve, scope); "deny" denies once."""
    return answer != "deny", SCOPES.get(answer, "once")


def what_became_of(approval_id: int, now: Approval | None) -> str:
    """Why an approval left the screen without a key: as read from the store now."""
    if now is None:
        return f"approval {approval_id} is gone"
    if now.status in ("pending", "expired"):
        return f"approval {approval_id} expired"
    where = " in another terminal" if now.decided_by == "user" else ""
    by = f" by {now.decided_by}" if now.decided_by else ""
    return f"approval {approval_id} {now.status}{by}{where}"
