"""Approvals and permission rules. Only the person (or agentdeck's own policy: timeout,
headless, saved rule) decides an approval; agents only ask, and never write rules."""

from __future__ import annotations

import json
from typing import Any

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.limits import MAX_APPROVAL_TIMEOUT_S, number_in
from agents.protocol import (
    SYSTEM,
    Approval,
    ApprovalDecided,
    ApprovalRequested,
    ApprovalScope,
    DecidedBy,
    PermissionRule,
    RuleAdded,
    RuleDecision,
    RuleRemoved,
)
from agents.store import rows
from agents.store.tx import Tx


def request_approval(
    tx: Tx,
    actor: str,
    tool: str,
    arguments: dict[str, Any],
    resolved: str,
    reason: str,
    *,
    timeout_s: float,
    task_id: int | None = None,
    tool_call_id: int | None = None,
    always_rule: str | None = None,
    ask_reason: str | None = None,
    preview: str | None = None,
) -> Approval:
    tx.check_actor(actor)
    if actor not in tx.agents:
        raise PermissionDenied(f"{actor}: only agents ask for approval")
    timeout_s = number_in(timeout_s, "timeout_s", 0.0, MAX_APPROVAL_TIMEOUT_S, low_open=True)
    if task_id is not None:
        task = rows.task(tx.row("tasks", task_id))
        if task.owner != actor:
            raise PermissionDenied(f"{actor} does not own task {task_id}")
    if tool_call_id is not None:
        call = rows.tool_call(tx.row("tool_calls", tool_call_id))
        if call.agent != actor:
            raise PermissionDenied(f"{actor} does not own tool call {tool_call_id}")
    cur = tx.execute(
        "INSERT INTO approvals (agent, task_id, tool_call_id, tool, arguments, resolved, reason, "
        "status, created_at, expires_at, always_rule, ask_reason, preview) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        (actor, task_id, tool_call_id, tool, json.dumps(arguments, sort_keys=True), resolved,
         reason, tx.now, tx.now + timeout_s, always_rule, ask_reason, preview),
    )
    assert cur.lastrowid is not None
    approval = rows.approval(tx.row("approvals", cur.lastrowid))
    tx.emit(actor, ApprovalRequested(approval=approval), subject=f"approval:{approval.id}")
    return approval


def _pending(tx: Tx, approval_id: int) -> Approval:
    approval = rows.approval(tx.row("approvals", approval_id))
    if approval.status != "pending":
        how = f" by {approval.decided_by}" if approval.decided_by else ""
        raise InvalidTransition(f"approval {approval_id} is not pending (already {approval.status}{how})")
    return approval


def _insert_rule(
    tx: Tx, actor: str, agent: str, tool: str, pattern: str, decision: RuleDecision, source: str
) -> PermissionRule:
    tx.execute(
        "INSERT INTO permission_rules (agent, tool, pattern, decision, source, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent, tool, pattern) DO UPDATE SET "
        "decision = excluded.decision, source = excluded.source, created_at = excluded.created_at",
        (agent, tool, pattern, decision, source, tx.now),
    )
    row = tx.one(
        "SELECT * FROM permission_rules WHERE agent = ? AND tool = ? AND pattern = ?",
        (agent, tool, pattern),
    )
    assert row is not None
    rule = rows.rule(row)
    tx.emit(actor, RuleAdded(rule=rule), subject=f"rule:{rule.id}")
    return rule


def decide_approval(
    tx: Tx,
    actor: str,
    approval_id: int,
    approve: bool,
    *,
    scope: ApprovalScope = "once",
    decided_by: DecidedBy = "user",
    rule_pattern: str | None = None,
) -> Approval:
    """Approve or deny a pending approval. `scope="always"` also saves an allow rule: the
    one the approval showed (`always_rule`), else `rule_pattern`, else exactly what the
    call resolved to."""
    tx.check_actor(actor)
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not decide approvals; only the person can")
    if scope not in ("once", "session", "always"):
        raise InvalidArgument(f"unknown scope {scope!r}")
    approval = _pending(tx, approval_id)
    if approval.expires_at <= tx.now:
        # Too late: the agent has been told (or is about to be) that time ran out.
        raise InvalidTransition(f"approval {approval_id} expired; the agent must ask again")
    status = "approved" if approve else "denied"
    tx.execute(
        "UPDATE approvals SET status = ?, decided_by = ?, scope = ?, decided_at = ? WHERE id = ?",
        (status, decided_by, scope, tx.now, approval_id),
    )
    rule_id = None
    if approve and scope == "always":
        if approval.always_rule is None and approval.tool_call_id is not None:
            raise InvalidArgument(f"approval {approval_id} offers no rule to save (the call can "
                                  "never be allowed by a rule); approve it once instead")
        pattern = approval.always_rule or rule_pattern or approval.resolved
        rule_id = _insert_rule(
            tx, actor, approval.agent, approval.tool, pattern, "allow", "approval"
        ).id
    tx.emit(
        actor,
        ApprovalDecided(
            approval_id=approval_id, status=status, decided_by=decided_by, scope=scope,
            rule_id=rule_id,
        ),
        subject=f"approval:{approval_id}",
        recipient=approval.agent,
    )
    return rows.approval(tx.row("approvals", approval_id))


def expire_approvals(tx: Tx, actor: str = SYSTEM) -> list[int]:
    """Pending approvals past their time become expired (a denial, decided by timeout)."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not expire approvals")
    due = tx.execute(
        "SELECT id, agent FROM approvals WHERE status = 'pending' AND expires_at <= ? ORDER BY id",
        (tx.now,),
    ).fetchall()
    for row in due:
        tx.execute(
            "UPDATE approvals SET status = 'expired', decided_by = 'timeout', decided_at = ? "
            "WHERE id = ?",
            (tx.now, row["id"]),
        )
        tx.emit(
            actor,
            ApprovalDecided(approval_id=row["id"], status="expired", decided_by="timeout", scope=None),
            subject=f"approval:{row['id']}",
            recipient=row["agent"],
        )
    return [row["id"] for row in due]


def cancel_approval(tx: Tx, actor: str, approval_id: int) -> Approval:
    """The asking agent withdraws its request (its task was cancelled, say)."""
    tx.check_actor(actor)
    approval = _pending(tx, approval_id)
    if approval.agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not cancel {approval.agent}'s approval")
    tx.execute(
        "UPDATE approvals SET status = 'cancelled', decided_at = ? WHERE id = ?",
        (tx.now, approval_id),
    )
    tx.emit(
        actor,
        ApprovalDecided(approval_id=approval_id, status="cancelled", decided_by=None, scope=None),
        subject=f"approval:{approval_id}",
        recipient=approval.agent,
    )
    return rows.approval(tx.row("approvals", approval_id))


def add_rule(
    tx: Tx,
    actor: str,
    agent: str,
    tool: str,
    pattern: str,
    decision: RuleDecision,
    *,
    source: str = "user",
) -> PermissionRule:
    tx.check_actor(actor)
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not write permission rules")
    if agent != "*":
        tx.check_agent(agent)
    if decision not in ("allow", "ask", "deny"):
        raise InvalidArgument(f"unknown decision {decision!r}")
    if not tool or not pattern:
        raise InvalidArgument("a rule needs a tool and a pattern")
    return _insert_rule(tx, actor, agent, tool, pattern, decision, source)


def remove_rule(tx: Tx, actor: str, rule_id: int) -> None:
    tx.check_actor(actor)
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not remove permission rules")
    tx.row("permission_rules", rule_id)
    tx.execute("DELETE FROM permission_rules WHERE id = ?", (rule_id,))
    tx.emit(actor, RuleRemoved(rule_id=rule_id), subject=f"rule:{rule_id}")
