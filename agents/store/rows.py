"""sqlite3.Row -> protocol Struct conversions, shared by reducers and queries."""

from __future__ import annotations

import json
import sqlite3

import msgspec

from agents.protocol import (
    AgentStatus,
    Approval,
    ChangedFile,
    Channel,
    ChannelMember,
    ChannelMessage,
    Checkpoint,
    InferenceUsage,
    McpTool,
    Memory,
    NotCheckpointed,
    PermissionRule,
    PlannedFile,
    Schedule,
    Task,
    ToolCall,
)


def task(r: sqlite3.Row) -> Task:
    return Task(
        id=r["id"], parent_id=r["parent_id"], job_id=r["job_id"], owner=r["owner"],
        created_by=r["created_by"], title=r["title"], body=r["body"], status=r["status"],
        priority=r["priority"], result=r["result"], attempts=r["attempts"],
        deadline=r["deadline"], created_at=r["created_at"], updated_at=r["updated_at"],
        message_id=r["message_id"],
    )


def channel(r: sqlite3.Row) -> Channel:
    return Channel(
        id=r["id"], name=r["name"], kind=r["kind"], topic=r["topic"],
        created_by=r["created_by"], created_at=r["created_at"],
    )


def member(r: sqlite3.Row) -> ChannelMember:
    return ChannelMember(
        channel_id=r["channel_id"], member=r["member"], role=r["role"], joined_at=r["joined_at"]
    )


def message(r: sqlite3.Row) -> ChannelMessage:
    return ChannelMessage(
        id=r["id"], channel_id=r["channel_id"], sender=r["sender"], recipient=r["recipient"],
        task_id=r["task_id"], body=r["body"], created_at=r["created_at"],
        deleted=bool(r["deleted"]),
    )


def memory(r: sqlite3.Row) -> Memory:
    return Memory(
        id=r["id"], agent=r["agent"], scope=r["scope"], kind=r["kind"], content=r["content"],
        tags=r["tags"].split(), importance=r["importance"], task_id=r["task_id"],
        compacted_into=r["compacted_into"], created_at=r["created_at"],
    )


def approval(r: sqlite3.Row) -> Approval:
    return Approval(
        id=r["id"], agent=r["agent"], task_id=r["task_id"], tool_call_id=r["tool_call_id"],
        tool=r["tool"], arguments=json.loads(r["arguments"]), resolved=r["resolved"],
        reason=r["reason"], status=r["status"], decided_by=r["decided_by"], scope=r["scope"],
        created_at=r["created_at"], expires_at=r["expires_at"], decided_at=r["decided_at"],
        always_rule=r["always_rule"], ask_reason=r["ask_reason"], preview=r["preview"],
    )


def checkpoint(r: sqlite3.Row) -> Checkpoint:
    plan = r["plan"]
    return Checkpoint(
        id=r["id"], kind=r["kind"], actor=r["actor"], task_id=r["task_id"],
        tool_call_id=r["tool_call_id"], workspace=r["workspace"], before_tree=r["before_tree"],
        after_tree=r["after_tree"], status=r["status"],
        files=msgspec.json.decode(r["files"], type=list[ChangedFile]),
        skipped=msgspec.json.decode(r["skipped"], type=list[NotCheckpointed]),
        plan=None if plan is None else msgspec.json.decode(plan, type=list[PlannedFile]),
        note=r["note"], created_at=r["created_at"], finished_at=r["finished_at"],
    )


def mcp_tool(r: sqlite3.Row) -> McpTool:
    return McpTool(
        server=r["server"], name=r["name"], description=r["description"], input_schema=r["input_schema"],
        schema_hash=r["schema_hash"], pinned_description=r["pinned_description"],
        pinned_schema=r["pinned_schema"], pinned_hash=r["pinned_hash"], listed=bool(r["listed"]),
        first_seen=r["first_seen"], changed_at=r["changed_at"], approved_at=r["approved_at"],
    )


def rule(r: sqlite3.Row) -> PermissionRule:
    return PermissionRule(
        id=r["id"], agent=r["agent"], tool=r["tool"], pattern=r["pattern"],
        decision=r["decision"], source=r["source"], created_at=r["created_at"],
    )


def tool_call(r: sqlite3.Row) -> ToolCall:
    return ToolCall(
        id=r["id"], agent=r["agent"], task_id=r["task_id"], tool=r["tool"],
        arguments=json.loads(r["arguments"]), status=r["status"], result=r["result"],
        started_at=r["started_at"], finished_at=r["finished_at"],
        owner_pid=r["owner_pid"], owner_started=r["owner_started"],
    )


def agent_status(r: sqlite3.Row) -> AgentStatus:
    return AgentStatus(
        agent=r["agent"], state=r["state"], task_id=r["task_id"], detail=r["detail"],
        heartbeat_at=r["heartbeat_at"], updated_at=r["updated_at"],
    )


def schedule(r: sqlite3.Row) -> Schedule:
    return Schedule(
        id=r["id"], agent=r["agent"], name=r["name"], interval_s=r["interval_s"],
        body=r["body"], enabled=bool(r["enabled"]), next_run_at=r["next_run_at"],
        last_run_at=r["last_run_at"], last_error=r["last_error"], cron=r["cron"],
    )


def usage(r: sqlite3.Row) -> InferenceUsage:
    return InferenceUsage(
        id=r["id"], agent=r["agent"], task_id=r["task_id"], prompt_tokens=r["prompt_tokens"],
        cached_tokens=r["cached_tokens"], completion_tokens=r["completion_tokens"],
        queue_s=r["queue_s"], decode_s=r["decode_s"], ts=r["ts"], backend=r["backend"], model=r["model"],
    )
