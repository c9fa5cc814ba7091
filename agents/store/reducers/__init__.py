"""Reducers: the only write path. Each is `fn(tx, actor, ...)`, run by Store.write in ONE
transaction: it validates the actor, writes rows and appends events, or raises a typed
error (PermissionDenied, NotFound, InvalidTransition, InvalidArgument) and writes nothing.
"""

from agents.store.reducers.agents import (
    claim_instance,
    heartbeat,
    instance_heartbeat,
    record_phase,
    record_usage,
    release_instance,
    save_cursor,
    save_cursors,
    set_agent_status,
)
from agents.store.reducers.approvals import (
    add_rule,
    cancel_approval,
    decide_approval,
    expire_approvals,
    remove_rule,
    request_approval,
)
from agents.store.reducers.channels import (
    add_member,
    create_channel,
    delete_message,
    post_message,
    remove_member,
    send_direct,
)
from agents.store.reducers.checkpoints import finish_restore, record_checkpoint, start_restore
from agents.store.reducers.mcp import approve_mcp, record_mcp_listing
from agents.store.reducers.memory import compact_memory, delete_memory, write_memory
from agents.store.reducers.schedules import (
    fire_schedule,
    mark_schedule_failed,
    remove_schedule,
    set_schedule,
)
from agents.store.reducers.tasks import (
    assign_task,
    cancel_task,
    create_task,
    set_task_status,
    stop_runaway_tree,
    task_from_message,
    update_task,
)
from agents.store.reducers.tools import finish_tool_call, interrupt_running_tool_calls, start_tool_call

__all__ = [
    "add_member",
    "add_rule",
    "approve_mcp",
    "assign_task",
    "cancel_approval",
    "cancel_task",
    "claim_instance",
    "compact_memory",
    "create_channel",
    "create_task",
    "decide_approval",
    "delete_memory",
    "delete_message",
    "expire_approvals",
    "finish_restore",
    "finish_tool_call",
    "fire_schedule",
    "heartbeat",
    "instance_heartbeat",
    "interrupt_running_tool_calls",
    "mark_schedule_failed",
    "post_message",
    "record_checkpoint",
    "record_mcp_listing",
    "record_phase",
    "record_usage",
    "release_instance",
    "remove_member",
    "remove_rule",
    "remove_schedule",
    "request_approval",
    "save_cursor",
    "save_cursors",
    "send_direct",
    "set_agent_status",
    "set_schedule",
    "set_task_status",
    "start_restore",
    "start_tool_call",
    "stop_runaway_tree",
    "task_from_message",
    "update_task",
    "write_memory",
]  # fmt: skip
