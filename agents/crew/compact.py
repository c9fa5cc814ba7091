"""Compaction: when an agent's active reflections pass `memory_compact_at`, scribe
summarises the oldest half into one long-term summary entry of that agent's; the
originals are kept, marked compacted. Scribe's model writes the summary; agentdeck
records it (an agent may not rewrite another agent's memory)."""

from __future__ import annotations

import json
from typing import Any

from agents.config import Config
from agents.crew.deadlines import plan_call
from agents.inference.routed import agent_snapshot
from agents.inference.types import ChatMessage
from agents.protocol import SYSTEM, Memory
from agents.store import AsyncStore
from agents.store import reducers as r

SUMMARY_SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"],
                  "additionalProperties": False}


def _active_reflections(conn: Any, agent: str) -> list[Memory]:
    from agents.store import rows

    found = conn.execute(
        "SELECT * FROM memory WHERE agent = ? AND kind = 'reflection' AND compacted_into IS NULL "
        "ORDER BY created_at, id", (agent,)).fetchall()
    return [rows.memory(row) for row in found]


async def compact_if_needed(store: AsyncStore, backend: Any, config: Config, agent: str) -> Memory | None:
    """The summary written, or None when there was nothing to do (or scribe is off, or
    its answer did not parse: the originals then simply stay active)."""
    threshold = config.memory_compact_at
    if "scribe" not in config.enabled_agents():
        return None
    active = await store.read(_active_reflections, agent)
    if len(active) <= threshold:
        return None
    oldest = active[: max(2, threshold // 2)]
    lessons = "\n".join(f"- {m.content}" for m in oldest)
    scribe = config.agents["scribe"]
    messages = [ChatMessage(role="system", content=scribe.system_prompt),
                ChatMessage(role="user", content=(
                    f"These are {agent}'s oldest lessons:\n{lessons}\n\nSummarise them into one short "
                    'paragraph worth keeping. Answer {"summary": "..."}.'))]
    # The deadline as every model call's: derived from the engine's measured speed unless
    # the person fixed scribe's timeout_s (0, the default, once meant 0 s here).
    prompt_tokens = sum([await backend.count_tokens(m.content, agent="scribe") for m in messages])
    limit = plan_call(prompt_tokens, scribe.inference.max_tokens, agent_snapshot(backend, "scribe").speed,
                      override_s=scribe.inference.timeout_s, most_s=config.inference.max_call_s,
                      key="agents.scribe.inference.timeout_s")
    result = await backend.submit(messages, agent="scribe", sampling=scribe.inference, schema=SUMMARY_SCHEMA,
                                  priority=scribe.priority, max_tokens=limit.max_tokens,
                                  timeout_s=limit.timeout_s)
    if result.finish_reason != "stop":
        return None
    try:
        summary = str(json.loads(result.text)["summary"]).strip()
    except (ValueError, KeyError, TypeError):
        return None
    if not summary:
        return None
    tags = sorted({t for m in oldest for t in m.tags})[:4]
    return await store.write(r.compact_memory, SYSTEM, [m.id for m in oldest], summary, tags=tags,
                             importance=max(m.importance for m in oldest))
