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
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from agents.checkpoints.git import GitError
from agents.config import AgentConfig, Config
from agents.crew import grounding, prompts, rules
from agents.crew.budget import TokenCounter
from agents.crew.compact import compact_if_needed
from agents.crew.deadlines import plan_call
from agents.crew.grounding import Evidence
from agents.crew.harness import DEFAULT, Harness
from agents.crew.live import LiveView
from agents.crew.recall import recall_by_meaning, within
from agents.crew.schemas import (
    FinalStep,
    Reflection,
    ToolStep,
    Triage,
    closed_final,
    decode,
    parse_step,
    reflection_schema,
    step_schema,
    triage_schema,
)
from agents.errors import AgentdeckError, InvalidArgument, TaskTreeTooLarge
from agents.gate import Gate
from agents.inference.backend import Backend
from agents.inference.routed import RoutedBackend, agent_snapshot
from agents.inference.types import ChatMessage, Result
from agents.memory.embedder import embedder_for
from agents.protocol import OWNER, AgentReflected, AgentStepped, AgentTriaged, Task
from agents.safe_text import shorten
from agents.store import AsyncStore, queries
from agents.store import reducers as r
from agents.tools import TOOLS
from agents.tools.base import AgentStore, Tool
from agents.tools.diffs import ChangedLine, changed_lines
from agents.tools.files import DIFF_SUFFIXES

log = logging.getLogger(__name__)

# Tokens a phase may generate at most (never more than the agent's max_tokens): a tiny
# model that rambles inside a JSON string would otherwise run to the agent's limit, twice.
PHASE_TOKENS = {"triage": 96, "reflect": 160, "step": 384, "combine": 384}
MEMORY_TOKENS = 300  # of recalled memories in a prompt
RECENT_MESSAGES = 3  # direct messages to the agent shown with each task
DEFERRED = "deferred:"  # how a deferred task's result starts; it is not deferred twice
ATTEMPTS = 2  # of a phase whose output does not parse
DIFF_BYTES = 1 << 20  # of a diff read for its changed lines
SIBLINGS_WAIT_S = 300.0  # a subtask that writes waits at most this long for its siblings' results


class Refusal(msgspec.Struct, frozen=True):
    """Why a final answer cannot end its task, told to the model."""
    why: str
    lever: str  # the harness lever that refused it
    in_words: bool = False  # fixed by answering again (else by a tool call first)


def _diff_changes(path: Path) -> list[ChangedLine]:
    """The changed lines of a diff file just read (blocking: run on a thread)."""
    try:
        with path.open("rb") as f:
            return changed_lines(f.read(DIFF_BYTES).decode("utf-8", errors="replace"))
    except OSError:
        return []


class PhaseFailed(AgentdeckError):
    """A phase could not complete (model error, output that never parsed, no steps left)."""


class TaskRunner:
    def __init__(self, name: str, config: Config, store: AsyncStore, backend: Backend, gate: Gate,
                 live: LiveView, counter: TokenCounter, harness: Harness = DEFAULT,
                 acted: set[str] | None = None) -> None:
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
        # The harness levers (its field names) that changed what the model was shown or
        # offered, or what became of its output: `bench crew --suite --where-acted` reruns a
        # task with a lever off only where the lever acted (elsewhere the run is the same).
        self.acted = acted if acted is not None else set()
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
        waiting = False  # stays so when a phase fails (the context ends the task failed)
        async with self._working(task):
            waiting = await self._work(task)
        if waiting:  # its subtasks may all have ended before it was blocked: nobody would wake it
            fresh = await self.store.read(queries.task, task.id)
            if fresh is not None and fresh.status == "blocked":
                await self._combine(fresh)

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

    async def _work(self, task: Task) -> bool:
        """Triage and act; True when the task now waits for subtasks it handed out."""
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
                return False
            except InvalidArgument as err:
                raise PhaseFailed(f"could not delegate to {to}: {err}") from None
            await self.store.write(r.set_task_status, task.id, "blocked",
                                   f"delegated to {triage.delegate_to} as task {child.id}")
        else:
            answer, steps = await self._act(task, context)
            open_children = await self._open_children(task)
            if open_children and self.harness.combine_verified:
                self.acted.add("combine_verified")
                # Its answer would run ahead of the work: the subtasks' results make it.
                await self.store.write(r.set_task_status, task.id, "blocked",
                                       "waiting for subtasks " + ", ".join(str(c.id) for c in open_children))
                return True
            await self._finish(task, context, answer, steps)
        return False

    async def _open_children(self, task: Task) -> list[Task]:
        children = await self.store.read(queries.tasks, statuses=("queued", "active", "blocked",
                                                                  "waiting_approval", "deferred"))
        return [c for c in children if c.parent_id == task.id]

    async def _giver(self, task: Task) -> str | None:
        """The agent that gave this task (the parent's owner, or the agent that created
        it); None when it came from the person or agentdeck."""
        if task.parent_id is not None:
            parent = await self.store.read(queries.task, task.parent_id)
            if parent is not None and parent.owner in self.agents:
                return parent.owner
        return task.created_by if task.created_by in self.agents and task.created_by != self.name else None

    async def _parents(self, task: Task, most: int = 3) -> list[Task]:
        """The task's parent, its parent's, ... (at most `most`), nearest first."""
        parents: list[Task] = []
        parent_id = task.parent_id
        while parent_id is not None and len(parents) < most:
            parent = await self.store.read(queries.task, parent_id)
            if parent is None:
                break
            parents.append(parent)
            parent_id = parent.parent_id
        return parents

    async def _context(self, task: Task) -> str:
        parents = await self._parents(task)
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
                                                                 reason=rule.reason, by="rule",
                                                                 delegate_to=rule.delegate_to))
            return rule
        messages = prompts.triage_messages(self.name, self.agent, context, self.agents)
        triage = await self._structured("triage", messages, triage_schema(self.agents), task.id,
                                        lambda text: decode(text, Triage))
        if triage.action == "delegate" and triage.delegate_to not in self.agents:
            triage = Triage(action="act", reason=f"{triage.reason} (no such agent to delegate to: acting)")
        giver = await self._giver(task)
        if triage.action == "delegate" and self.harness.no_hand_back and triage.delegate_to == giver:
            self.acted.add("no_hand_back")
            triage = Triage(action="act", reason=f"{triage.reason} ({giver} gave me this task: acting)")
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
            self.acted.add("rules_first")
            # psutil measures the CPU over 0.2 s, sleeping: in a thread, or the loop stalls.
            normal, figures = await asyncio.to_thread(rules.health_is_normal)
            return rules.health_triage(normal, figures)
        rule = await self._change_route(task) or rules.triage_rule(task, self.agent.tools)
        if rule is None and self.harness.keep_own and task.created_by == OWNER and task.parent_id is None \
                and grounding.evidence_tools(task, self._tools(task)):
            # Measured: triage sent most of the person's tasks away from the agent they chose.
            rule = Triage(action="act", reason="the person gave it to me, and my tools can do it")
            self.acted.add("keep_own")
        if rule is not None:
            self.acted.add("rules_first")
        return rule

    def _writers(self, task: Task) -> list[str]:
        """When the task asks for a change to a file that this agent's tools cannot make (and
        it cannot delegate: lead's own check makes it), the other agents whose tools can,
        in the config's order; else none."""
        if not grounding.change_out_of_reach(task, self.agent.tools):
            return []
        return [a for a in self.agents if a != self.name
                and set(grounding.WRITE_TOOLS) & set(self.config.agents[a].tools)]

    async def _change_route(self, task: Task) -> Triage | None:
        """A change this agent cannot make, handed to an agent that can (harness.route_changes).
        Measured (Qwen-1.5B, keep_own off): dev handed fix-typo to review, which has no tool
        that writes; review answered "fixed" and the task ended done, nothing verified. Not
        back to the agent that gave it unless only it can: that is the work returning to
        where it can be done, not a hand-back."""
        writers = self._writers(task) if self.harness.route_changes else []
        if not writers:
            return None
        self.acted.add("route_changes")
        giver = await self._giver(task)
        to = next((a for a in writers if a != giver), writers[0])
        return Triage(action="delegate", delegate_to=to,
                      reason=f"it asks for a change to a file, which my tools cannot make and {to}'s can")

    # --- act ---

    def _tools(self, task: Task) -> list[str]:
        """The tools this task offers: a question gets no write tools, and the
        calculator only while its lever is on."""
        tools = list(self.agent.tools)
        if self.harness.questions_read_only and grounding.is_question(task):
            read_only = {*grounding.WRITE_TOOLS, *grounding.RECORD_TOOLS}
            tools = self._without(tools, read_only, "questions_read_only")
        if not self.harness.calculator:
            tools = [t for t in tools if t != "calculate"]
        elif "calculate" in tools:
            self.acted.add("calculator")
        if self.harness.fitting_tools and not grounding.asks_to_tell(task):
            # Measured: asked to fix a typo, Qwen-1.5B sent lead five messages about sending
            # messages until its steps ran out; the final answer is what reaches the person.
            tools = self._without(tools, set(grounding.MESSAGE_TOOLS), "fitting_tools")
        if self.harness.fitting_tools and not grounding.asks_to_add(task):
            # Measured: asked to fix a typo, Qwen-1.5B appended the corrected line below the old one.
            tools = self._without(tools, {"append_file"}, "fitting_tools")
        # The MCP servers' tools scoped to this agent and approved (agentdeck mcp).
        return tools + sorted(self.gate.mcp_tools(self.name))

    def _without(self, tools: list[str], left_out: set[str], lever: str) -> list[str]:
        """`tools` less `left_out`; the lever acted when that took one away."""
        kept = [t for t in tools if t not in left_out]
        if len(kept) < len(tools):
            self.acted.add(lever)
        return kept

    def _catalog(self) -> dict[str, Tool]:
        """Every tool this agent may be offered, by name: the built-in ones and its MCP ones."""
        return {**TOOLS, **self.gate.mcp_tools(self.name)}

    async def _act(self, task: Task, context: str) -> tuple[str, list[tuple[str, str]]]:
        await self._state("acting", task.id)
        tools = self._tools(task)
        if self.harness.verify_changes and grounding.change_out_of_reach(task, tools):
            # Any answer would claim a change that no tool here could make or read back.
            self.acted.add("verify_changes")
            writers = self._writers(task)
            raise PhaseFailed(f"it asks for a change to a file, and {self.name} has no tool that makes one"
                              + (f"; {' or '.join(writers)} can" if writers else ""))
        try:  # an isolated agent's task works in a worktree of its own: made before any step
            await self.gate.prepare(self.name, task.id)
        except GitError as err:
            raise PhaseFailed(f"the task's worktree could not be made: {err}") from None
        steps: list[tuple[str, str]] = []
        # What the task is about includes what it is part of. Measured: lead handed ops
        # "check system info" for a CPU-core count; ops answered "5 cores" without a look.
        task = await self._in_scope(task)
        evidence = Evidence(shown=[("task", task.title), ("task", task.body)])
        needs = grounding.evidence_tools(task, tools) if self.harness.evidence else set()
        if needs:
            self.acted.add("evidence")
        first = (rules.first_step(task, tools, self.gate.workspace_for(self.name, task.id))
                 if self.harness.rules_first
                 else None)
        if first is not None:
            self.acted.add("rules_first")
        most = self.agent.max_steps
        self.live.max_steps = most
        refused = False  # the step before was a refused final answer
        try:
            for number in range(1, most + 1):
                self.live.step = number
                if first is not None and number == 1:
                    step, said = first, json.dumps({"tool": first.tool, "arguments": first.arguments})
                else:
                    look_first = bool(needs) and evidence.ok_calls == 0
                    again = self.harness.act_after_refusal and refused
                    narrowed = await self._edit_targets(task, tools, evidence)
                    self.acted.update(lever for lever, on in (("act_after_refusal", again),
                                                              ("edit_targets", narrowed)) if on)
                    step, said = await self._step(task, context, number, steps, tools, look_first, again,
                                                  narrowed)
                refused = False
                self.live.steps += 1
                if isinstance(step, FinalStep):
                    refusal = await self._check_final(task, step.final, evidence, needs)
                    problem = refusal.why if refusal else ""
                    if refusal is not None:
                        self.acted.add(refusal.lever)
                    await self.store.write(r.record_phase, AgentStepped(
                        task_id=task.id, step=number, tool=None, decision=None,
                        status="refused" if problem else "final", summary=shorten(step.final)))
                    if not problem:
                        return step.final, steps
                    if number == most:
                        raise PhaseFailed(f"the final answer was refused: {problem}")
                    steps.append((said, f"[refused] {problem}"))
                    # Measured: the 0.5B sent the same refused answer until its steps ran out.
                    refused = refusal is not None and not refusal.in_words
                    continue
                result = await self._grounded_call(task, number, step, evidence)
                steps.append((said, result))
                now = await self.store.read(queries.task, task.id)
                if now is None or now.status in ("done", "failed", "cancelled"):
                    # Ended elsewhere (a runaway tree stopped): no more steps for it.
                    raise PhaseFailed(f"task {task.id} ended while it ran")
        finally:
            self.live.step = self.live.max_steps = 0
        raise PhaseFailed(f"no final answer within {most} steps")

    async def _in_scope(self, task: Task) -> Task:
        """The task with its parents' titles added to its body, for the grounding checks
        and the rules (never shown as the task: the prompt says "part of task #N")."""
        titles = [parent.title for parent in await self._parents(task)]
        if not titles:
            return task
        return msgspec.structs.replace(task, body="\n".join([task.body, *titles]))

    async def _edit_targets(self, task: Task, tools: list[str], evidence: Evidence) -> dict[str, dict]:
        """A task that asks for a change, before anything changed: once every existing file
        it names was read here, the schemas of the tools that change those files and
        create the ones it names that do not exist yet, narrowed to them
        (grounding.change_choices). Empty: the step is not narrowed."""
        if not self.harness.edit_targets or evidence.changed or not grounding.asks_for_change(task):
            return {}
        named: dict[str, Path] = {}
        for name in rules.named_files(task):
            path = self._workspace_file(name, task)
            if path is None:
                return {}
            named[name] = path
        # A file to create holds what a look found, when the task needs one: look first.
        looked = evidence.ok_calls > 0 or not grounding.needs_a_look(task)
        return await asyncio.to_thread(grounding.change_choices, named, evidence.read, tools,
                                       grounding.quoted(task), may_create=looked) if named else {}

    async def _step(self, task: Task, context: str, number: int, steps: list[tuple[str, str]],
                    tools: list[str], look_first: bool, after_refusal: bool = False,
                    narrowed: dict[str, dict] | None = None) -> tuple[ToolStep | FinalStep, str]:
        """The model's step `number`: the step and its JSON as fed back. No final answer
        when look_first (no tool has shown anything yet in a task that needs evidence) or
        after_refusal (the answer before was refused: a tool call must fix it). `narrowed`:
        the change tools with their arguments narrowed to the files read, the only
        choice (no final answer: the change is what was asked)."""
        most = self.agent.max_steps
        # The last step, or a step after the model repeated itself, may only answer:
        # a loop of identical calls would otherwise run out the steps.
        repeated = len(steps) >= 2 and steps[-1][0] == steps[-2][0]
        offered = [] if number == most or repeated else tools
        if look_first and offered and self.harness.evidence:
            offered = [t for t in tools if t in grounding.first_look(task, tools)] or offered
        if narrowed and offered:
            offered = [t for t in offered if t in narrowed] or offered
        changing = bool(narrowed) and all(t in narrowed for t in offered)
        only_final = f"step {number} of {most} allows only a final answer" if not offered else ""
        if repeated and number < most:
            only_final += " (the step before repeated the same call)"
        no_final = ("" if not offered else
                    "no final answer before a tool has shown what it rests on" if look_first else
                    "after a refused answer, a tool call that fixes what was refused" if after_refusal
                    else "the files to change are read: the next step changes them" if changing
                    else "")
        catalog = self._catalog()
        if self.harness.examples:
            self.acted.add("examples")
        if any(len(result) > self.harness.result_chars for _, result in steps):
            self.acted.add("result_chars")
        head = prompts.step_head(self.name, self.agent, context, examples=self.harness.examples, tools=tools,
                                 catalog=catalog)
        turns = prompts.step_turns(steps, self.harness.result_chars)
        messages = await self.counter.fit(head, turns, self._prompt_budget())
        step = await self._structured(f"step {number}", messages,
                                      step_schema(offered, final=not no_final, catalog=catalog,
                                                  narrowed=narrowed if changing else None),
                                      task.id, functools.partial(parse_step, tools=offered,
                                                                 only_final=only_final, no_final=no_final))
        return step, msgspec.json.encode(step).decode()

    async def _check_final(self, task: Task, answer: str, evidence: Evidence, needs: set[str],
                           ) -> Refusal | None:
        """Why this final answer cannot end the task (None when it can), each check behind
        its lever. The model is told and may try again while steps remain."""
        harness = self.harness
        if needs and "delegate" in self.agent.tools:
            # Every part beyond the agent's own tools handed to an agent whose tools can do
            # it (measured: lead delegated the CPU cores and answered the file count itself).
            others = {a: set(self.config.agents[a].tools) for a in self.agents if a != self.name}
            for aspect, can in grounding.uncovered(task, self._tools(task)).items():
                # An agent with a tool made for it, not run_shell that can do anything (measured:
                # lead handed ops both the file count and the cores, as ops can run `ls`).
                fits = grounding.fitting(can, others.values())
                if not any(fits & others[a] for a in evidence.delegated if a in others):
                    able = [a for a, tools in others.items() if fits & tools]
                    return Refusal(f"the part about {aspect} is not done: delegate it"
                                   + (f" to {' or '.join(able)}" if able else ""), lever="evidence")
        if harness.combine_verified and await self._open_children(task):
            self.acted.add("combine_verified")
            return None  # this answer waits: the subtasks' results will make the task's answer
        if needs and evidence.ok_calls == 0:
            return Refusal("nothing in this task has been looked at: use one of " + ", ".join(sorted(needs))
                           + " first", lever="evidence")
        if harness.no_hand_back and grounding.only_delegates(answer):
            return Refusal("saying the task will be handed on is not an answer: do it with your tools"
                           + (", or call the delegate tool" if "delegate" in self.agent.tools else ""),
                           lever="no_hand_back")
        writes = set(grounding.WRITE_TOOLS) & needs  # the task asks for a change to a file
        if harness.verify_changes and writes and not evidence.changed:
            # Whatever the words ("corrected", "is now 5"): measured, edits were claimed in
            # many ways and made in none.
            offered = " or ".join(t for t in ("edit_file", "append_file") if t in self._tools(task))
            return Refusal("this task asks for a change to a file, and none was made and read back: make "
                           f"it with {offered or 'a tool that writes'} (write_file only for a new file)",
                           lever="verify_changes")
        if harness.on_the_change and evidence.diff_changes:
            # Measured: reading a diff, Qwen-1.5B put three bugs of four on lines the change
            # does not touch (`return rows.fetchone()` for an injection two lines up).
            pointed = grounding.off_the_change(answer, evidence.diff_changes,
                                               must_point=grounding.asks_which_line(task))
            if pointed:
                added = [c for c in evidence.diff_changes if c.added][:8]
                what = pointed if pointed == grounding.NO_LINE else f"{pointed}: not a line this change adds"
                return Refusal(f"{what}; the change adds "
                               + "; ".join(f"{c.path}:{c.line} {shorten(c.text.strip(), 80)}" for c in added)
                               + ". Say which added line is wrong, as path:N, and what is wrong with it",
                               lever="on_the_change", in_words=True)
        if harness.grounded_numbers and needs and grounding.asks_for_figures(task) \
                and grounding.is_question(task) and not grounding.gives_a_figure(answer):
            # Measured: asked how much disk is free, in GiB, the 0.5B answered "ok".
            return Refusal("the question asks for a figure and the answer gives none: state it as the "
                           "tool results show it", lever="grounded_numbers", in_words=True)
        if harness.grounded_numbers and needs and grounding.is_question(task):
            off = grounding.count_off_its_subject(task.title, answer,
                                                  [text for tool, text in evidence.shown if tool != "task"])
            if off:
                return Refusal(f"{off}: give the count the tools showed", lever="grounded_numbers",
                               in_words=True)
        if harness.grounded_numbers and needs and grounding.asks_for_figures(task):
            computed = grounding.asks_for_computed_figure(task)
            loose = grounding.ungrounded_numbers(answer, evidence.texts(computed=computed))
            if loose:
                calc = "calculate" in self._tools(task)
                if computed:
                    # No example figures: measured, the 1.5B then computed "5+1" from "5-1".
                    how = ("compute it with calculate over the figures the tools showed" if calc
                           else "compute it with a tool")
                    return Refusal(f"{', '.join(loose[:5])}: no tool computed this in this task; {how}",
                                   lever="grounded_numbers")
                return Refusal(f"{', '.join(loose[:5])}: in no tool result of this task; give the figures "
                               f"the tools showed" + (" or compute them with calculate" if calc else ""),
                               lever="grounded_numbers", in_words=True)
        return None

    async def _grounded_call(self, task: Task, number: int, step: ToolStep, evidence: Evidence) -> str:
        """A tool call with the grounding around it: an existing file is changed only after
        it was read in this task, a change is read back, and what came back is evidence."""
        tool, args = step.tool, step.arguments
        writes = tool in grounding.WRITE_TOOLS
        path = self._workspace_file(args.get("path"), task) if writes or tool == "read_file" else None
        if writes and self.harness.read_before_write and path is not None \
                and path.is_file() and path not in evidence.read:
            refusal = (f"{args.get('path')} exists and was not read in this task: read_file it first, "
                       "then change only what must change")
            await self._refused(task, number, tool, refusal, "read_before_write")
            return f"[refused] {refusal}"
        said = json.dumps([tool, args], sort_keys=True)
        if writes and self.harness.verify_changes and said in evidence.writes:
            # Measured: Qwen-1.5B appended the changelog line, read the file, appended it again.
            refusal = f"this exact change was made and verified already: {args.get('path')} is done"
            await self._refused(task, number, tool, refusal, "verify_changes")
            return f"[refused] {refusal}"
        if writes and tool == "write_file" and self.harness.read_before_write and path is not None \
                and path.is_file():
            # No placeholder words here: measured, Qwen-1.5B sent "the exact text to replace"
            # as `old`, twice.
            refusal = (f"{args.get('path')} exists and write_file is for new files: add at its end with "
                       "append_file, or change one line with edit_file, `old` copied from the file as read")
            await self._refused(task, number, tool, refusal, "read_before_write")
            return f"[refused] {refusal}"
        if tool == "calculate" and self.harness.grounded_numbers and grounding.asks_for_figures(task):
            expression = str(args.get("expression", ""))
            loose = [n for n in grounding.ungrounded_numbers(expression, evidence.texts())
                     if float(n.replace(",", ".")) not in grounding.CONSTANTS]
            if loose:
                refusal = (f"{', '.join(loose[:5])}: in no tool result of this task; calculate with "
                           "the figures the tools showed")
                await self._refused(task, number, tool, refusal, "grounded_numbers")
                return f"[refused] {refusal}"
        giver = await self._giver(task) if tool == "delegate" and self.harness.no_hand_back else None
        if giver is not None and args.get("to") == giver:
            refusal = f"{giver} gave you this task: do it yourself, or delegate to another agent"
            await self._refused(task, number, tool, refusal, "no_hand_back")
            return f"[refused] {refusal}"
        if tool == "delegate" and self.harness.writes_wait:
            step = await self._after_siblings(task, step)
        status, text = await self._call_tool(task, number, step)
        if status == "ok" and writes and path is not None and self.harness.verify_changes:
            self.acted.add("verify_changes")
            content = str(args.get({"write_file": "content", "edit_file": "new"}.get(tool, "text"), ""))
            workspace = self.gate.workspace_for(self.name, task.id)
            problem = grounding.verify_change(workspace, tool, str(path.relative_to(workspace)), content)
            if problem:
                return f"[error] {text}; but reading it back: {problem}"
            evidence.changed.append(str(path))
            evidence.writes.add(said)
        if status == "ok" and tool == "delegate":
            evidence.delegated.append(str(args.get("to", "")))
        if status == "ok" and tool == "read_file" and path is not None:
            evidence.read.add(path)
            if path.name.endswith(DIFF_SUFFIXES):
                evidence.diff_changes += await asyncio.to_thread(_diff_changes, path)
        if status == "ok" and writes and path is not None:
            evidence.read.add(path)  # what it holds now is what the agent just wrote
        evidence.record(tool, status, text)
        return f"[{status}] {text}"

    async def _after_siblings(self, task: Task, step: ToolStep) -> ToolStep:
        """A subtask that changes a file, handed out while subtasks that look things up are
        still open, waits for them (bounded) and carries their results in its body.
        Measured: asked to save the disk's use in disk.txt, lead handed ops the look and dev
        the write at once, and dev, with no figure, had to make one up or look again."""
        args = step.arguments
        body = str(args.get("body", ""))
        if not grounding.asks_for_change(msgspec.structs.replace(task, title=str(args.get("title", "")),
                                                                 body=body)):
            return step
        self.acted.add("writes_wait")
        await self._siblings_ended(task, SIBLINGS_WAIT_S)
        done = [c for c in await self.store.read(queries.tasks) if c.parent_id == task.id
                and c.status == "done" and c.result]
        if not done:
            return step
        found = "\n".join(f"- task {c.id} ({c.owner}): {shorten(c.result or '', 300)}" for c in done)
        body = "\n".join(part for part in (body, f"What the other subtasks found:\n{found}") if part)
        return msgspec.structs.replace(step, arguments={**args, "body": body})

    async def _siblings_ended(self, task: Task, most_s: float) -> None:
        """Returns once no subtask of `task` is open, or after `most_s`: woken by each
        commit to the store (a subtask ends in one), never by a timer."""
        changed = asyncio.Event()
        listener = lambda _events: changed.set()  # noqa: E731 - on the event loop, after a commit
        self.shared_store.add_commit_listener(listener)
        deadline = time.monotonic() + most_s
        try:
            while True:
                changed.clear()  # before the read: a commit after it wakes the wait below
                left = deadline - time.monotonic()
                if left <= 0 or not await self._open_children(task):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            self.shared_store.remove_commit_listener(listener)

    async def _refused(self, task: Task, number: int, tool: str, refusal: str, lever: str) -> None:
        """A call grounding refused before the gate (`lever` refused it): recorded as a step,
        never run."""
        self.acted.add(lever)
        await self.store.write(r.record_phase, AgentStepped(
            task_id=task.id, step=number, tool=tool, decision=None, status="refused",
            summary=shorten(refusal)))

    def _workspace_file(self, raw: object, task: Task) -> Path | None:
        """A tool's path argument as a real path inside the task's workspace, or None."""
        if not isinstance(raw, str) or not raw or "\x00" in raw:
            return None
        workspace = self.gate.workspace_for(self.name, task.id)
        path = Path(os.path.realpath(workspace / os.path.expanduser(raw)))
        return path if path.is_relative_to(workspace) else None

    def _prompt_budget(self) -> int:
        """Tokens a prompt may take (counted by the model's tokenizer): this slot's share
        of the KV cells, less the longest answer. Five agents must fit at once: past the
        KV pool the engine pauses and re-evaluates sequences instead of working."""
        inference = self.config.inference
        share = inference.n_ctx // max(inference.slots, 1) - max(PHASE_TOKENS.values())
        return max(share, 256)

    async def _call_tool(self, task: Task, number: int, step: ToolStep) -> tuple[str, str]:
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
        return result.status, result.text

    # --- delegation: the parent completes when its children are done ---

    async def _combine(self, task: Task) -> None:
        children = [t for t in await self.store.read(queries.tasks) if t.parent_id == task.id]
        if any(c.status not in ("done", "failed", "cancelled") for c in children):
            return  # not yet
        async with self._working(task):
            context = await self._context(task)
            results = "\n".join(f"- task {c.id} ({c.owner}, {c.status}): {c.result or ''}" for c in children)
            only = (" State only what these results say; say which subtask failed, if one did."
                    if self.harness.combine_verified else "")
            if only:
                self.acted.add("combine_verified")
            messages = [prompts.system_message(self.name, self.agent), ChatMessage(role="user", content=(
                f"{context}\n\nYour subtasks finished:\n{results}\n\nCombine their results into the "
                f'answer.{only} Answer {{"final": "..."}}.'))]
            step = await self._structured("combine", messages, step_schema([]), task.id,
                                          lambda text: parse_step(text, []))
            answer = step.final if isinstance(step, FinalStep) else ""
            if self.harness.combine_verified:
                answer = self._combined_from_results(task, answer, children)
            await self._finish(task, context, answer, [(f"subtask {c.id}", c.result or "") for c in children])

    def _combined_from_results(self, task: Task, answer: str, children: list[Task]) -> str:
        """The combined answer, held to what the subtasks' results say: a figure none of
        them (nor the task) shows means the model's words are replaced by the results
        themselves; a subtask that did not end done is always named."""
        done = [c for c in children if c.status == "done"]
        if not done:
            raise PhaseFailed("no subtask ended done: " + "; ".join(
                f"task {c.id} ({c.owner}) {c.status}: {shorten(c.result or '', 120)}" for c in children))
        evidence = [task.title, task.body, *(c.result or "" for c in done)]
        if not answer.strip() or grounding.ungrounded_numbers(answer, evidence):
            answer = "; ".join(f"{c.owner}: {c.result}" for c in done)
        missing = [c for c in children if c.status != "done"]
        if missing:
            answer += " — not done: " + "; ".join(f"task {c.id} ({c.owner}) {c.status}: "
                                                 f"{shorten(c.result or '', 120)}" for c in missing)
        return answer

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
        await self._end(task, "done", (answer or "(no answer)") + await self._branch_note(task))
        try:
            await compact_if_needed(self.shared_store, self.backend, self.config, self.name)
        except AgentdeckError as err:
            log.warning("%s: compacting memory failed: %s", self.name, err)

    async def _branch_note(self, task: Task) -> str:
        """A task worked in a worktree: its changes committed on its branch, and the
        result says where (and how to merge) so the person and other agents can find it."""
        if not self.gate.isolated(self.name, task.id):
            return ""
        try:
            done = await self.gate.worktrees.commit(task.id, f"agentdeck task {task.id}: {task.title}"[:200],
                                                    self.name)
        except GitError as err:
            return f" [its worktree could not be committed: {err}]"
        if done is None or not done.files:
            return ""
        return (f" [branch {done.branch}: {done.files} file(s) changed, +{done.added} -{done.removed}; "
                f"`agentdeck merge {task.id}` merges it]")

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
        says so, for the panes), up to ATTEMPTS calls. Output its token cap cut
        (harness.cut_replies): a final answer is kept as far as it went, else the retry
        tells the model it was cut."""
        problem = ""
        for attempt in range(1, ATTEMPTS + 1):
            retry = f"retrying: the output did not parse (attempt {attempt} of {ATTEMPTS})"
            text, cut_at = await self._model(phase, messages, schema, task_id, retry if attempt > 1 else "")
            try:
                return parse(text)
            except ValueError as err:
                problem = str(err) if cut_at is None else f"cut at its {cut_at}-token limit: {err}"
            if cut_at is None or not self.harness.cut_replies:
                continue
            self.acted.add("cut_replies")
            closed = closed_final(text)
            if closed is not None:
                with contextlib.suppress(ValueError):  # a final answer this step does not allow
                    return parse(closed)
            messages = prompts.told_it_was_cut(messages, cut_at)
        raise PhaseFailed(f"{phase}: the model's output did not parse twice ({problem})")

    async def _model(self, phase: str, messages: list[ChatMessage], schema: dict[str, Any],
                     task_id: int, note: str = "") -> tuple[str, int | None]:
        """The model's text, and its token cap when the cap cut it (else None)."""
        messages = await self.counter.fit(messages, [], self._prompt_budget())  # a long task text is cut
        self.live.begin_call(phase)
        self.live.note = note
        try:
            return await self._call_model(phase, messages, schema, task_id)
        finally:
            self.live.model_s += time.monotonic() - self.live.call_started

    async def _call_model(self, phase: str, messages: list[ChatMessage], schema: dict[str, Any],
                          task_id: int) -> tuple[str, int | None]:
        sampling = self.agent.inference
        cap = min(sampling.max_tokens, PHASE_TOKENS.get(phase.split()[0], sampling.max_tokens))
        speed = agent_snapshot(self.backend, self.name).speed  # of the backend this agent thinks with
        limit = plan_call(await self.counter.size(messages), cap, speed,
                          override_s=sampling.timeout_s, most_s=self.config.inference.max_call_s,
                          key=f"agents.{self.name}.inference.timeout_s")
        if self.harness.grammar:
            self.acted.add("grammar")
        gen = self.backend.submit(messages, agent=self.name, sampling=sampling,
                                  schema=schema if self.harness.grammar else None,
                                  max_tokens=limit.max_tokens, priority=self.agent.priority,
                                  timeout_s=limit.timeout_s)
        async for piece in gen:
            self.live.feed(piece)
        result: Result = await gen
        usage = result.usage
        # Who served it, for the ledger: the routed backend's name (a single one is the
        # config's), and the model its meter names.
        backend = (self.backend.backend_name(self.name) if isinstance(self.backend, RoutedBackend)
                   else self.agent.model or self.config.default_backend)
        model = agent_snapshot(self.backend, self.name).model[:200] or None  # the store's cap
        try:
            await self.store.write(r.record_usage, agent=self.name, prompt_tokens=usage.prompt_tokens,
                                   cached_tokens=usage.cached_prompt_tokens,
                                   completion_tokens=usage.completion_tokens, queue_s=usage.queue_wait_s,
                                   decode_s=usage.decode_s, task_id=task_id, backend=backend,
                                   model=model)
        except AgentdeckError as err:
            log.warning("%s: usage not recorded: %s", self.name, err)
        if result.finish_reason == "timeout":
            raise PhaseFailed(f"{phase}: {limit.timed_out()}" + (f"; {result.error}" if result.error else ""))
        if result.finish_reason not in ("stop", "length"):
            raise PhaseFailed(f"{phase}: the model call ended with {result.finish_reason}"
                              + (f" ({result.error})" if result.error else ""))
        return result.text, (limit.max_tokens if result.finish_reason == "length" else None)

    async def _state(self, state: str, task_id: int | None, detail: str = "") -> None:
        self.live.state = state
        try:
            await self.store.write(r.set_agent_status, self.name, state, task_id=task_id, detail=detail)
        except AgentdeckError as err:
            log.warning("%s: status not recorded: %s", self.name, err)
        await asyncio.sleep(0)
