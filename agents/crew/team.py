"""The crew: one supervised loop per enabled agent, fed by a dispatcher that follows the
durable bus.

- Dispatcher: a task created or assigned to an agent goes into that agent's bounded
  queue, as the Task itself (`task.created` carries it whole: the dispatcher does not read
  it again, and the runner reads it once, just before it claims it); an unassigned one
  is read fresh and routed first (an `@agent` mention wins, else a constrained model
  choice among the agents' role descriptions, else lead). A direct message to an agent
  about no task becomes a task for it (the reply goes back to the sender); a deferred
  task comes back after `defer_s`; a finished subtask wakes its parent's owner, whose
  parent completes once all its children are done. At start, the tasks and messages a
  previous run left are taken up again (active tasks return to the queue).
- Agent loop: works up to `max_concurrent` tasks at once, each with its own state, the
  rest waiting; beats a heartbeat while idle.
- Supervisor: a loop that raises restarts with exponential backoff; five crashes in five
  minutes stop that agent (status crashed, a message to the person) while the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque

from agents.bus import Bus
from agents.config import Config
from agents.crew.budget import TokenCounter, clip
from agents.crew.harness import DEFAULT, Harness
from agents.crew.live import LiveView
from agents.crew.runner import TaskRunner
from agents.errors import AgentdeckError, InvalidArgument, InvalidTransition
from agents.gate import Gate
from agents.inference.backend import Backend
from agents.inference.types import ChatMessage
from agents.intake import mentioned, route
from agents.protocol import (
    OWNER,
    SYSTEM,
    Event,
    MessagePosted,
    Task,
    TaskAssigned,
    TaskCreated,
    TaskStatusChanged,
)
from agents.store import AsyncStore, EventFilter, queries
from agents.store import reducers as r

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
IDLE_LOOK_S = 1.0
HEARTBEAT_S = 5.0
DEFER_LOOK_S = 30.0  # how often deferred tasks are looked at (more often when defer_s is short)
CRASH_LIMIT = 5
CRASH_WINDOW_S = 300.0
BACKOFF_S = (0.5, 30.0)  # first delay, most
FINISHED = ("done", "failed", "cancelled")
UNFINISHED = ("queued", "active", "blocked", "waiting_approval")
ROUTE_CHARS = 4000  # of a task's body shown to the router: its gist, never megabytes to tokenise


async def choose_agent(backend: Backend, config: Config, title: str, body: str) -> str | None:
    """A constrained model choice among the enabled agents, by their role descriptions;
    None when the call fails (the caller falls back to lead)."""
    agents = config.enabled_agents()
    roles = "\n".join(f"- {name}: {a.role}" for name, a in agents.items())
    intro = "You route tasks to the agent whose role fits best."
    messages = [ChatMessage(role="system", content=f"{intro}\n{roles}"),
                ChatMessage(role="user", content=f"Task: {title}\n{clip(body, ROUTE_CHARS)}\n"
                                                 'Answer {"agent": name}.')]
    schema = {"type": "object", "properties": {"agent": {"enum": list(agents)}}, "required": ["agent"],
              "additionalProperties": False}
    gen = backend.submit(messages, agent="router", schema=schema, priority=9, max_tokens=24, timeout_s=60)
    result = await gen
    if result.finish_reason != "stop":
        return None
    try:
        choice = json.loads(result.text).get("agent")
    except (ValueError, AttributeError):
        return None
    return choice if choice in agents else None


class AgentLoop:
    def __init__(self, name: str, config: Config, store: AsyncStore, backend: Backend,
                 gate: Gate, harness: Harness = DEFAULT, acted: set[str] | None = None) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.backend = backend
        self.gate = gate
        self.harness = harness
        self.acted = acted if acted is not None else set()  # the levers that acted (TaskRunner.acted)
        # Waiting work, highest priority first, then oldest: (-priority, created_at, task id,
        # the task as handed in). The id is unique in the queue (`pending`), so the Task
        # itself is never compared.
        self.queue: asyncio.PriorityQueue[tuple[int, float, int, Task]] = asyncio.PriorityQueue(
            maxsize=QUEUE_SIZE)
        self.pending: set[int] = set()  # queued or running here: at-least-once delivery, once worked
        self.jobs: dict[int, asyncio.Task[None]] = {}  # task id -> the job working it
        self.live = LiveView(agent=name)
        self.counter = TokenCounter(backend, agent=name)  # one per agent: its system prompt is counted once
        self.crashes: deque[float] = deque(maxlen=CRASH_LIMIT)
        self.paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()

    def pause(self, on: bool) -> None:
        """A paused agent finishes what it is doing and takes no new task until resumed."""
        self.paused = on
        if on:
            self._resumed.clear()
        else:
            self._resumed.set()

    async def offer(self, task: Task) -> None:
        if task.id not in self.pending:
            self.pending.add(task.id)
            # Bounded: a full queue slows the dispatcher.
            await self.queue.put((-task.priority, task.created_at, task.id, task))

    async def run(self) -> None:
        await self.store.write(r.set_agent_status, SYSTEM, self.name, "idle")
        slots = asyncio.Semaphore(max(1, self.config.agents[self.name].max_concurrent))
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if self.paused:
                    await self._wait_resumed()
                try:
                    _, _, task_id, task = await asyncio.wait_for(self.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await self.store.write(r.heartbeat, SYSTEM, self.name)
                    continue
                if self.paused:  # paused while waiting: the task waits with it
                    await self._wait_resumed()
                await slots.acquire()
                job = asyncio.create_task(self._work(task, slots))
                running.add(job)
                self.jobs[task_id] = job
                job.add_done_callback(running.discard)
                job.add_done_callback(lambda _job, tid=task_id: self.jobs.pop(tid, None))
        finally:
            for job in list(running):
                job.cancel()
            for job in list(running):
                with contextlib.suppress(asyncio.CancelledError):
                    await job

    async def _wait_resumed(self) -> None:
        await self.store.write(r.set_agent_status, SYSTEM, self.name, "paused", detail="paused by the person")
        self.live.state = "paused"
        while not self._resumed.is_set():
            try:
                await asyncio.wait_for(self._resumed.wait(), HEARTBEAT_S)
            except TimeoutError:
                await self.store.write(r.heartbeat, SYSTEM, self.name)
        self.live.state = "idle"
        await self.store.write(r.set_agent_status, SYSTEM, self.name, "idle")

    async def _work(self, task: Task, slots: asyncio.Semaphore) -> None:
        task_id = task.id
        try:
            runner = TaskRunner(self.name, self.config, self.store, self.backend, self.gate, self.live,
                                self.counter, self.harness, self.acted)
            await runner.run(task)
        except asyncio.CancelledError:
            await asyncio.shield(self._requeue(task_id))  # stopped mid-task: it resumes next start
            raise
        except Exception as err:  # the task fails, the agent goes on
            log.exception("%s: task %d failed unexpectedly", self.name, task_id)
            with contextlib.suppress(AgentdeckError):
                await self.store.write(r.set_task_status, self.name, task_id, "failed",
                                       f"internal error: {type(err).__name__}: {err}")
        finally:
            self.pending.discard(task_id)
            slots.release()

    def interrupt(self, task_id: int) -> None:
        """The task was cancelled: stop its model call, kill its tool call, withdraw its
        approval (each cleans up as the cancellation passes through it)."""
        job = self.jobs.get(task_id)
        if job is not None:
            job.cancel()

    async def _requeue(self, task_id: int) -> None:
        with contextlib.suppress(AgentdeckError):
            task = await self.store.read(queries.task, task_id)
            if task is not None and task.status == "active":
                await self.store.write(r.set_task_status, SYSTEM, task_id, "queued",
                                       "interrupted: agentdeck stopped while this task ran")


class Crew:
    def __init__(self, store: AsyncStore, bus: Bus, backend: Backend, gate: Gate,
                 config: Config, *, harness: Harness = DEFAULT) -> None:
        self.store = store
        self.bus = bus
        self.config = config
        self.agents = list(config.enabled_agents())
        # The harness levers that acted in any of its agents' tasks since it started: the
        # suite runs one task per crew, and reruns it with a lever off only where it acted.
        self.levers_acted: set[str] = set()
        self.loops = {name: AgentLoop(name, config, store, backend, gate, harness, self.levers_acted)
                      for name in self.agents}
        self.backend = backend
        self._tasks: list[asyncio.Task[None]] = []  # for as long as the crew runs
        # Task id -> the job routing it, until that job ends (one per unassigned task: kept
        # after it ended, a busy day's jobs would pile up for as long as the crew runs).
        self._routing: dict[int, asyncio.Task[None]] = {}

    def live(self, name: str) -> LiveView:
        return self.loops[name].live

    async def start(self, from_event: int) -> None:
        kinds = ["task.created", "task.assigned", "task.status", "message.posted"]
        sub = await self.bus.subscribe(None, EventFilter(kinds=kinds), start=from_event)
        for name, loop in self.loops.items():
            self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=f"agent:{name}"))
        await self._take_up_left_work()
        self._tasks.append(asyncio.create_task(self._dispatch(sub), name="crew:dispatch"))
        self._tasks.append(asyncio.create_task(self._wake_deferred(), name="crew:deferred"))

    async def stop(self) -> None:
        jobs = [*self._tasks, *self._routing.values()]
        for task in jobs:
            task.cancel()
        for task in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for name in self.agents:
            with contextlib.suppress(AgentdeckError):
                await self.store.write(r.set_agent_status, SYSTEM, name, "stopped")

    async def wait_idle(self, deadline_s: float | None = None) -> bool:
        """Until idle on two looks a second apart (a task may sit between its agent's queue
        and its first status change), or the deadline. True when idle."""
        until = None if deadline_s is None else time.monotonic() + deadline_s
        idle_before = False
        while until is None or time.monotonic() < until:
            await asyncio.sleep(IDLE_LOOK_S)
            idle = await self.idle()
            if idle and idle_before:
                return True
            idle_before = idle
        return False

    async def idle(self) -> bool:
        """Nothing queued, active, blocked or waiting, and no approval pending."""
        tasks = await self.store.read(queries.tasks, statuses=UNFINISHED)
        if any(t.owner in self.loops or t.owner is None for t in tasks):
            return False
        return not await self.store.read(queries.approvals, status="pending")

    # --- dispatching ---

    async def _take_up_left_work(self) -> None:
        for message_id in await self.store.read(queries.messages_without_task, self.agents):
            await self._task_from_message(message_id)
        for task in await self.store.read(queries.tasks, statuses=("active", "queued", "blocked")):
            if task.status == "active" and task.owner in self.loops:
                task = await self.store.write(r.set_task_status, SYSTEM, task.id, "queued",
                                              "interrupted: agentdeck stopped while this task ran")
            await self._place(task)  # as just listed (or written): no second read

    async def _dispatch(self, sub: object) -> None:
        async for event in sub:  # type: ignore[attr-defined]
            try:
                await self._handle(event)
            except Exception as err:
                log.warning("dispatching event %d failed: %s", event.id, err)

    async def _handle(self, event: Event) -> None:
        payload = event.payload
        if isinstance(payload, MessagePosted):
            msg = payload.message
            if msg.recipient in self.loops and msg.task_id is None and msg.sender != msg.recipient:
                await self._task_from_message(msg.id)
        elif isinstance(payload, TaskCreated):
            if payload.task.owner is None:
                # Read fresh before routing: someone may have assigned it since (or a restart
                # placed it from the store already), and routing the event's copy would
                # overwrite that owner. One read beside a routing model call is nothing.
                await self._place_by_id(payload.task.id)
            else:
                await self._place(payload.task)  # the event carries the task whole
        elif isinstance(payload, TaskAssigned):
            loop = self.loops.get(payload.owner or "")
            if payload.task_id in self._routing or (loop is not None and payload.task_id in loop.pending):
                return  # its routing job places it as assigned, or its new owner holds it already
            await self._place_by_id(payload.task_id)
        elif isinstance(payload, TaskStatusChanged):
            if payload.new == "queued":
                await self._place_by_id(payload.task_id)
            elif payload.new in FINISHED:
                if payload.new == "cancelled":
                    for loop in self.loops.values():
                        loop.interrupt(payload.task_id)
                await self._wake_parent(payload.task_id)

    async def _place_by_id(self, task_id: int) -> None:
        """For an event that names the task without carrying it."""
        task = await self.store.read(queries.task, task_id)
        if task is not None:
            await self._place(task)

    async def _place(self, task: Task) -> None:
        """The task, as an event carried it or a read found it, to its agent's queue, or
        routed first. It may be stale by now (cancelled, reassigned): the runner sees that
        when it reads the task just before it claims it."""
        if task.status in FINISHED or task.status == "deferred":
            return
        task_id = task.id
        if task.owner is None:
            if task_id not in self._routing:  # the model call runs beside the dispatcher
                job = asyncio.create_task(self._route(task), name=f"crew:route:{task_id}")
                self._routing[task_id] = job
                job.add_done_callback(lambda _job, tid=task_id: self._routing.pop(tid, None))
            return
        if task.owner in self.loops:
            await self.loops[task.owner].offer(task)

    async def _route(self, task: Task) -> None:
        """Routes the task as handed in (no read: the model call works on its title and body)."""
        assigned: Task | None = None
        try:
            owner = mentioned(task.title, task.body, self.agents)
            if owner is None:
                owner = await choose_agent(self.backend, self.config, task.title, task.body)
            with contextlib.suppress(InvalidTransition, InvalidArgument):
                assigned = await self.store.write(r.assign_task, SYSTEM, task.id,
                                                  owner or route("", "", self.agents))
        except Exception as err:  # routing must never lose a task: it goes to lead
            log.warning("routing task %d failed: %s; giving it to lead", task.id, err)
            with contextlib.suppress(AgentdeckError):
                assigned = await self.store.write(r.assign_task, SYSTEM, task.id, route("", "", self.agents))
        # Placed as written (its task.assigned is not read while this job runs); where no
        # write went through, as the store has it (someone else's assignment, or finished).
        if assigned is not None:
            await self._place(assigned)
        else:
            await self._place_by_id(task.id)

    async def _task_from_message(self, message_id: int) -> None:
        with contextlib.suppress(InvalidArgument, InvalidTransition):
            await self.store.write(r.task_from_message, SYSTEM, message_id)  # its task.created places it

    async def _wake_deferred(self) -> None:
        """Deferred tasks go back to their agent's queue once `defer_s` has passed."""
        defer_s = self.config.defer_s
        while True:
            await asyncio.sleep(min(max(defer_s / 4, 0.2), DEFER_LOOK_S))
            try:
                now = time.time()
                for task in await self.store.read(queries.tasks, statuses=("deferred",)):
                    if task.owner in self.loops and now - task.updated_at >= defer_s:
                        await self.store.write(r.set_task_status, SYSTEM, task.id, "queued")
            except AgentdeckError as err:
                log.warning("waking deferred tasks failed: %s", err)

    async def _wake_parent(self, task_id: int) -> None:
        task = await self.store.read(queries.task, task_id)
        if task is None or task.parent_id is None:
            return
        parent = await self.store.read(queries.task, task.parent_id)
        if parent is not None and parent.status == "blocked" and parent.owner in self.loops:
            await self.loops[parent.owner].offer(parent)

    # --- supervision ---

    async def _supervise(self, name: str, loop: AgentLoop) -> None:
        attempt = 0
        while True:
            try:
                await loop.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                now = time.monotonic()
                loop.crashes.append(now)
                recent = [t for t in loop.crashes if now - t < CRASH_WINDOW_S]
                log.warning("agent %s crashed (%d in %.0f s): %s", name, len(recent), CRASH_WINDOW_S, err)
                if len(recent) >= CRASH_LIMIT:
                    await self._stop_agent(name, err)
                    return
                attempt += 1
                delay = min(BACKOFF_S[0] * 2 ** (attempt - 1), BACKOFF_S[1])
                with contextlib.suppress(AgentdeckError):
                    await self.store.write(r.set_agent_status, SYSTEM, name, "crashed",
                                           detail=f"restarting in {delay:g} s: {type(err).__name__}: {err}")
                await asyncio.sleep(delay)

    async def _stop_agent(self, name: str, err: Exception) -> None:
        why = (f"stopped after {CRASH_LIMIT} crashes in {CRASH_WINDOW_S:.0f} s; "
               f"last: {type(err).__name__}: {err}")
        with contextlib.suppress(AgentdeckError):
            await self.store.write(r.set_agent_status, SYSTEM, name, "crashed", detail=why)
            await self.store.write(r.send_direct, name, OWNER, f"{name} {why}")
