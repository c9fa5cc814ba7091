"""One task through one agent: triage → act → reflect, every phase recorded as an event.

- Triage: cheap rules first (`rules`: a subtask delegated to this agent is acted on; ops
  acts on machine questions; a scheduled health check with nothing abnormal needs no model),
  then a schema-constrained model call: act / delegate / defer / ignore.
- Act: at most `max_steps` model steps; each step is constrained by a grammar built from
  the agent's own tools' argument schemas, or is the final answer. Tool calls go through
  the gate (and may wait for approval while the other agents carry on); their result,
  capped, is fed back. A step whose output does not parse is retried once (the live
  view says so), then fails.
- Reflect: a schema-constrained reflection becomes a memory entry. The task ends done or
  failed, its result stored, a line posted to #agent-logs, and the asking agent told.

Every model call has a deadline fitted to the model (deadlines.py: from the engine's
measured speed, or the agent's inference.timeout_s when set); a failure of any phase
fails the task with the reason, never the agent, and a timeout names the limit it hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from agents.config import AgentConfig, Config
from agents.crew import prompts, rules
from agents.crew.budget import TokenCounter
from agents.crew.compact import compact_if_needed
from agents.crew.deadlines import plan_call
from agents.crew.harness import DEFAULT, Harness
from agents.crew.live import LiveView
from agents.crew.recall import recall_by_meaning, within
from agents.crew.schemas import (
    FinalStep,
    Reflection,
    ToolStep,
    Triage,
    decode,
    parse_step,
    reflection_schema,
    step_schema,
    triage_schema,
)
from agents.errors import AgentdeckError, InvalidArgument, TaskTreeTooLarge
from agents.gate import Gate
from agents.inference.backend import Backend
from agents.inference.types import ChatMessage, Result
from agents.memory.embedder import embedder_for
from agents.protocol import OWNER, AgentReflected, AgentStepped, AgentTriaged, Task
from agents.safe_text import shorten
from agents.store import AsyncStore, queries
from agents.store import reducers as r
from agents.tools.base import AgentStore

log = logging.getLogger(__name__)

# Tokens a phase may generate at most (never more than the agent's max_tokens): a tiny
# model that rambles inside a JSON string would otherwise run to the agent's limit, twice.
PHASE_TOKENS = {"triage": 96, "reflect": 160, "step": 384, "combine": 384}
MEMORY_TOKENS = 300  # of recalled memories in a prompt
RECENT_MESSAGES = 3  # direct messages to the agent shown with each task
DEFERRED = "deferred:"  # how a deferred task's result starts; it is not deferred twice
ATTEMPTS = 2  # of a phase whose output does not parse


class PhaseFailed(AgentdeckError):
    """A phase could not complete (model error, output that never parsed, no steps left)."""


class TaskRunner:
    def __init__(self, name: str, config: Config, store: AsyncStore, backend: Backend, gate: Gate,
                 live: LiveView, counter: TokenCounter, harness: Harness = DEFAULT) -> None:
        self.name = name
        self.config = config
        self.agent: AgentConfig = config.agents[name]
        self.store = AgentStore(store, name)
        self.shared_store = store  # for what agentdeck records on the agent's behalf
        self.backend = backend
        self.gate = gate
        self.live = live
        self.counter = counter
        self.harness = harness
        self.agents = list(config.enabled_agents())

    # --- the whole task ---

    async def run(self, handed: Task) -> None:
        """Works the task the dispatcher handed in. The one read before work, and it must
        stay: the handed copy may be stale (cancelled, reassigned, taken up or finished
        since it was queued), and a cancelled task must not start; the fresh copy is the
        one worked."""
        task = await self.store.read(queries.task, handed.id)
        if task is None or task.owner != self.name:
            return  # reassigned or gone meanwhile
        if task.status == "blocked":
            await self._combine(task)
            return
        if task.status != "queued":
            return  # already being worked, or finished (at-least-once delivery)
        async with self._working(task):
            await self._work(task)

    @contextlib.asynccontextmanager
    async def _working(self, task: Task) -> AsyncIterator[None]:
        """What working a task means, for its first run and for combining its subtasks:
        the task active and on the live view, a failed phase failing the task (not the
        agent), then the agent idle again and the time counted as work."""
        started = time.monotonic()
        await self.store.write(r.set_task_status, task.id, "active")
        self.live.task_id = task.id
        try:
            yield
        except PhaseFailed as err:
            await self._end(task, "failed", str(err))
        finally:
            self.live.task_id, self.live.phase = None, ""
            await self._state("idle", None)
            self.live.work_s += time.monotonic() - started

    async def _work(self, task: Task) -> None:
        if task.deadline is not None and time.time() > task.deadline:
            raise PhaseFailed(f"past its deadline ({time.ctime(task.deadline)})")
        context = await self._context(task)
        triage = await self._triage(task, context)
        if triage.action == "ignore":
            await self._end(task, "done", f"ignored: {triage.reason}")
        elif triage.action == "defer":
            await self.store.write(r.set_task_status, task.id, "deferred", f"{DEFERRED} {triage.reason}")
        elif triage.action == "delegate" and triage.delegate_to and triage.delegate_to != self.name:
            to = triage.delegate_to
            try:
                child = await self.store.write(r.create_task, task.title, body=task.body, owner=to,
                                               parent_id=task.id, priority=task.priority)
            except TaskTreeTooLarge:
                try:
                    await self.store.write(r.stop_runaway_tree, task.id)  # this task ends with its tree
                except InvalidArgument as under:  # a subtask finished in between: nothing to stop
                    raise PhaseFailed(f"could not delegate to {to}: the task tree was full a moment ago, "
                                      f"and is not now ({under}); try again") from None
                return
            except InvalidArgument as err:
                raise PhaseFailed(f"could not delegate to {to}: {err}") from None
            await self.store.write(r.set_task_status, task.id, "blocked",
                                   f"delegated to {triage.delegate_to} as task {child.id}")
        else:
            answer, steps = await self._act(task, context)
            await self._finish(task, context, answer, steps)

    async def _context(self, task: Task) -> str:
        parents: list[Task] = []
        parent_id = task.parent_id
        while parent_id is not None and len(parents) < 3:
            parent = await self.store.read(queries.task, parent_id)
            if parent is None:
                break
            parents.append(parent)
            parent_id = parent.parent_id
        ranked = await recall_by_meaning(self.store, embedder_for(self.shared_store),
                                         f"{task.title} {task.body}", self.name,
                                         half_life_days=self.config.memory_half_life_days)
        memories = await within(ranked, MEMORY_TOKENS, self.counter.count)
        received = await self.store.read(queries.direct_messages, self.name, RECENT_MESSAGES + 1,
                                         received_only=True)
        recent = [m for m in received if m.id != task.message_id][-RECENT_MESSAGES:]
        return prompts.task_text(task, parents, memories, recent)

    # --- triage ---

    async def _triage(self, task: Task, context: str) -> Triage:
        await self._state("triage", task.id)
        rule = await self._triage_rule(task)
        if rule is not None:
            await self.store.write(r.record_phase, AgentTriaged(task_id=task.id, action=rule.action,
                                                                 reason=rule.reason, by="rule"))
            return rule
        messages = prompts.triage_messages(self.name, self.agent, context, self.agents)
        triage = await self._structured("triage", messages, triage_schema(self.agents), task.id,
                                        lambda text: decode(text, Triage))
        if triage.action == "delegate" and triage.delegate_to not in self.agents:
            triage = Triage(action="act", reason=f"{triage.reason} (no such agent to delegate to: acting)")
        if triage.action == "defer" and (task.result or "").startswith(DEFERRED):
            triage = Triage(action="act", reason=f"{triage.reason} (deferred once already: acting now)")
        await self.store.write(r.record_phase, AgentTriaged(task_id=task.id, action=triage.action,
                                                             reason=triage.reason,
                                                             delegate_to=triage.delegate_to))
        return triage

    async def _triage_rule(self, task: Task) -> Triage | None:
        if not self.harness.rules_first:
            return None
        if rules.is_health_check(task, self.agent.tools):
            # psutil measures the CPU over 0.2 s, sleeping: in a thread, or the loop stalls.
            normal, figures = await asyncio.to_thread(rules.health_is_normal)
            return rules.health_triage(normal, figures)
        return rules.triage_rule(task, self.agent.tools)

    # --- act ---

    async def _act(self, task: Task, context: str) -> tuple[str, list[tuple[str, str]]]:
        await self._state("acting", task.id)
        steps: list[tuple[str, str]] = []
        first = rules.first_step(task, self.agent.tools) if self.harness.rules_first else None
        most = self.agent.max_steps
        self.live.max_steps = most
        try:
            for number in range(1, most + 1):
                self.live.step = number
                if first is not None and number == 1:
                    step, said = first, json.dumps({"tool": first.tool, "arguments": first.arguments})
                else:
                    step, said = await self._step(task, context, number, steps)
                self.live.steps += 1
                if isinstance(step, FinalStep):
                    await self.store.write(r.record_phase, AgentStepped(
                        task_id=task.id, step=number, tool=None, decision=None, status="final",
                        summary=shorten(step.final)))
                    return step.final, steps
                result = await self._call_tool(task, number, step)
                steps.append((said, result))
                now = await self.store.read(queries.task, task.id)
                if now is None or now.status in ("done", "failed", "cancelled"):
                    # Ended elsewhere (a runaway tree stopped): no more steps for it.
                    raise PhaseFailed(f"task {task.id} ended while it ran")
        finally:
            self.live.step = self.live.max_steps = 0
        raise PhaseFailed(f"no final answer within {most} steps")

    async def _step(self, task: Task, context: str, number: int,
                    steps: list[tuple[str, str]]) -> tuple[ToolStep | FinalStep, str]:
        """The model's step `number`: the step and its JSON as fed back."""
        most = self.agent.max_steps
        # The last step, or a step after the model repeated itself, may only answer:
        # a loop of identical calls would otherwise run out the steps.
        repeated = len(steps) >= 2 and steps[-1][0] == steps[-2][0]
        offered = [] if number == most or repeated else list(self.agent.tools)
        only_final = f"step {number} of {most} allows only a final answer" if not offered else ""
        if repeated and number < most:
            only_final += " (the step before repeated the same call)"
        head = prompts.step_head(self.name, self.agent, context, examples=self.harness.examples)
        turns = prompts.step_turns(steps, self.harness.result_chars)
        messages = await self.counter.fit(head, turns, self._prompt_budget())
        step = await self._structured(f"step {number}", messages, step_schema(offered), task.id,
                                      functools.partial(parse_step, tools=offered, only_final=only_final))
        return step, msgspec.json.encode(step).decode()

    def _prompt_budget(self) -> int:
        """Tokens a prompt may take (counted by the model's tokenizer): this slot's share
        of the KV cells, less the longest answer. Five agents must fit at once: past the
        KV pool the engine pauses and re-evaluates sequences instead of working."""
        inference = self.config.inference
        share = inference.n_ctx // max(inference.slots, 1) - max(PHASE_TOKENS.values())
        return max(share, 256)

    async def _call_tool(self, task: Task, number: int, step: ToolStep) -> str:
        async def waiting() -> None:  # the gate decided to ask: the call waits for a person
            await self._state("waiting", task.id, f"waiting for approval: {step.tool}")

        self.live.last_tool, self.live.last_tool_outcome = step.tool, ""
        started = time.monotonic()
        try:
            outcome = await self.gate.call(self.name, step.tool, step.arguments, task_id=task.id,
                                           reason=step.reason or "",  # the model's words, or none
                                           on_waiting=waiting)
        finally:
            self.live.tool_s += time.monotonic() - started
        await self._state("acting", task.id)
        result = outcome.result
        self.live.last_tool_outcome = result.status
        await self.store.write(r.record_phase, AgentStepped(
            task_id=task.id, step=number, tool=step.tool, decision=outcome.decision.decision,
            status=result.status, summary=shorten(json.dumps(step.arguments, ensure_ascii=False))))
        return f"[{result.status}] {result.text}"

    # --- delegation: the parent completes when its children are done ---

    async def _combine(self, task: Task) -> None:
        children = [t for t in await self.store.read(queries.tasks) if t.parent_id == task.id]
        if any(c.status not in ("done", "failed", "cancelled") for c in children):
            return  # not yet
        async with self._working(task):
            context = await self._context(task)
            results = "\n".join(f"- task {c.id} ({c.owner}, {c.status}): {c.result or ''}" for c in children)
            messages = [prompts.system_message(self.name, self.agent), ChatMessage(role="user", content=(
                f"{context}\n\nYour subtasks finished:\n{results}\n\nCombine their results into the answer. "
                'Answer {"final": "..."}.'))]
            step = await self._structured("combine", messages, step_schema([]), task.id,
                                          lambda text: parse_step(text, []))
            answer = step.final if isinstance(step, FinalStep) else ""
            await self._finish(task, context, answer, [(f"subtask {c.id}", c.result or "") for c in children])

    # --- reflect and end ---

    async def _finish(self, task: Task, context: str, answer: str, steps: list[tuple[str, str]]) -> None:
        await self._state("reflecting", task.id)
        summary = f"{len(steps)} tool step(s); final answer: {shorten(answer, 300)}"
        by = "model"
        try:
            reflection = await self._structured(
                "reflect", prompts.reflect_messages(self.name, self.agent, context, summary),
                reflection_schema(), task.id, lambda text: decode(text, Reflection))
        except PhaseFailed as err:  # a failed reflection does not undo the work: remember the facts
            log.warning("%s: reflection on task %d failed (%s); keeping what happened",
                        self.name, task.id, err)
            reflection, by = Reflection(outcome="success", lesson="", importance=1), "fallback"
        lesson = reflection.lesson.strip() or f"{task.title}: {summary}"
        importance = min(max(reflection.importance, 1), 5)
        tags = [t for t in reflection.tags if t.strip() and " " not in t][:4]
        try:
            memory = await self.store.write(r.write_memory, lesson[:2000], kind="reflection", tags=tags,
                                            importance=importance, task_id=task.id)
            await self.store.write(r.record_phase, AgentReflected(
                task_id=task.id, outcome=reflection.outcome, lesson=shorten(lesson, 300),
                importance=importance, memory_id=memory.id, by=by))
        except AgentdeckError as err:
            log.warning("%s: reflection on task %d not recorded: %s", self.name, task.id, err)
        await self._end(task, "done", answer or "(no answer)")
        try:
            await compact_if_needed(self.shared_store, self.backend, self.config, self.name)
        except AgentdeckError as err:
            log.warning("%s: compacting memory failed: %s", self.name, err)

    async def _end(self, task: Task, status: str, result: str) -> None:
        current = await self.store.read(queries.task, task.id)
        if current is None or current.status in ("done", "cancelled", "failed"):
            return
        await self.store.write(r.set_task_status, task.id, status, result)
        line = f"task {task.id} {status}: {shorten(task.title, 60)} → {shorten(result, 120)}"
        try:
            await self.store.write(r.post_message, "agent-logs", line, task_id=task.id)
            asker = task.created_by
            asked_by_message = task.message_id is not None and asker == OWNER
            if asker != self.name and (asker in self.agents or asked_by_message):
                # The reply names the task, so it starts no new work on the other side.
                await self.store.write(r.send_direct, asker, line, task_id=task.id)
        except AgentdeckError as err:
            log.warning("%s: could not report task %d: %s", self.name, task.id, err)

    # --- model calls ---

    async def _structured(self, phase: str, messages: list[ChatMessage], schema: dict[str, Any],
                          task_id: int, parse: Any) -> Any:
        """A schema-constrained call; output that does not parse is retried (the live view
        says so, for the panes), up to ATTEMPTS calls."""
        problem = ""
        for attempt in range(1, ATTEMPTS + 1):
            retry = f"retrying: the output did not parse (attempt {attempt} of {ATTEMPTS})"
            text = await self._model(phase, messages, schema, task_id, retry if attempt > 1 else "")
            try:
                return parse(text)
            except ValueError as err:
                problem = str(err)
        raise PhaseFailed(f"{phase}: the model's output did not parse twice ({problem})")

    async def _model(self, phase: str, messages: list[ChatMessage], schema: dict[str, Any],
                     task_id: int, note: str = "") -> str:
        messages = await self.counter.fit(messages, [], self._prompt_budget())  # a long task text is cut
        self.live.begin_call(phase)
        self.live.note = note
        try:
            return await self._call_model(phase, messages, schema, task_id)
        finally:
            self.live.model_s += time.monotonic() - self.live.call_started

    async def _call_model(self, phase: str, messages: list[ChatMessage], schema: dict[str, Any],
                          task_id: int) -> str:
        sampling = self.agent.inference
        cap = min(sampling.max_tokens, PHASE_TOKENS.get(phase.split()[0], sampling.max_tokens))
        limit = plan_call(await self.counter.size(messages), cap, self.backend.snapshot().speed,
                          override_s=sampling.timeout_s, most_s=self.config.inference.max_call_s,
                          key=f"agents.{self.name}.inference.timeout_s")
        gen = self.backend.submit(messages, agent=self.name, sampling=sampling,
                                  schema=schema if self.harness.grammar else None,
                                  max_tokens=limit.max_tokens, priority=self.agent.priority,
                                  timeout_s=limit.timeout_s)
        async for piece in gen:
            self.live.feed(piece)
        result: Result = await gen
        usage = result.usage
        try:
            await self.store.write(r.record_usage, agent=self.name, prompt_tokens=usage.prompt_tokens,
                                   cached_tokens=usage.cached_prompt_tokens,
                                   completion_tokens=usage.completion_tokens, queue_s=usage.queue_wait_s,
                                   decode_s=usage.decode_s, task_id=task_id)
        except AgentdeckError as err:
            log.warning("%s: usage not recorded: %s", self.name, err)
        if result.finish_reason == "timeout":
            raise PhaseFailed(f"{phase}: {limit.timed_out()}" + (f"; {result.error}" if result.error else ""))
        if result.finish_reason not in ("stop", "length"):
            raise PhaseFailed(f"{phase}: the model call ended with {result.finish_reason}"
                              + (f" ({result.error})" if result.error else ""))
        return result.text

    async def _state(self, state: str, task_id: int | None, detail: str = "") -> None:
        self.live.state = state
        try:
            await self.store.write(r.set_agent_status, self.name, state, task_id=task_id, detail=detail)
        except AgentdeckError as err:
            log.warning("%s: status not recorded: %s", self.name, err)
        await asyncio.sleep(0)
