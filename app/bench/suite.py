"""`agentdeck bench crew --suite`: how often the crew gets workstation tasks right.

The tasks (app/bench/suite_tasks.py) cover the five agents: machine questions (ops),
files created and edited exactly and questions over them (dev), diffs with a planted bug
(review), work lead must split and combine, and "what happened" over seeded history
(scribe). Each runs alone with the real model, in a fresh home and workspace whose
rules let dev write and dev, ops and review run sandboxed commands (the suite measures
the agents, not the gate); its checker then judges the answer against the truth of that
moment. Reported per harness variant: each task done / verified correct per round, and
the shares as median and range over rounds. Figures, never assertions.

`--ablate` measures what each lever of the harness is worth: the suite with the default
harness and with each lever off in turn (agents/crew/harness.py), interleaved round by
round so that a noisy machine affects all alike. `--tasks PATTERN` runs a subset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape

from agents.config import Config, InferenceConfig, RuleConfig, parse_config
from agents.crew.harness import ABLATIONS, DEFAULT, Harness, levers_off
from agents.errors import InvalidArgument
from agents.inference import Backend, build_backend, resolve_model_path
from agents.protocol import OWNER
from agents.runtime import Host
from agents.store import Store, queries
from agents.store import reducers as r
from app.bench.harness import order, spread
from app.bench.journal import Journal, header_for, open_journal
from app.bench.suite_result import Share, SuiteFigures, TaskResult, TaskTally
from app.bench.suite_tasks import SuiteTask, Verdict, judge, select, snapshot
from app.progress import LoadProgress
from app.render import line

TASK_DEADLINE_S = 180.0  # a task still unfinished then counts as not done
SUITE_RULES = [  # on top of the default rules: the suite measures the agents, not the gate
    RuleConfig(agent="dev", tool="write_file", pattern="*", decision="allow"),
    RuleConfig(agent="dev", tool="append_file", pattern="*", decision="allow"),
    RuleConfig(agent="dev", tool="edit_file", pattern="*", decision="allow"),
    *[RuleConfig(agent=a, tool="run_shell", pattern="*", decision="allow") for a in ("dev", "ops", "review")],
]


def suite_config(ws: Path, inference: InferenceConfig) -> Config:
    config = parse_config(f'workspace = "{ws}"\nschedules = []\nsandbox = "bwrap"\n')
    config.rules = [*config.rules, *SUITE_RULES]
    config.inference = inference
    return config


async def run_task(task: SuiteTask, tmp: Path, backend: Backend, harness: Harness,
                   inference: InferenceConfig, deadline_s: float = TASK_DEADLINE_S) -> TaskResult:
    """One task through the whole crew in a fresh home and workspace under `tmp`, then
    judged. The backend is the host's for this task (started and stopped with it)."""
    home, ws = tmp / "home", tmp / "ws"
    home.mkdir(parents=True)
    ws.mkdir()
    config = suite_config(ws, inference)
    db = home / "agentdeck.db"
    with Store.open(db, config.enabled_agents()) as store:
        task.setup(ws, store)
    before = snapshot(ws)
    started = time.monotonic()
    async with Host(db, config, backend=backend, crew=True, harness=harness) as host:
        created = await host.store.write(r.create_task, OWNER, task.prompt, owner=task.agent)
        assert host.crew is not None
        await host.crew.wait_idle(deadline_s)
        wall = time.monotonic() - started
        final = await host.store.read(queries.task, created.id)
        acted = sorted(host.crew.levers_acted)
        answer = (final.result or "") if final else ""
        status = final.status if final else "?"
        verdict = Verdict(False, f"not done: {status}")
        if status == "done":
            # Judged while the host (and its model) still runs: the machine's truth is the
            # one the agent saw. Measured: memory use fell from 6% to 2.5% once the 1.5B
            # model was unloaded, and a right answer was judged wrong.
            verdict = await asyncio.to_thread(_judge, task, answer, ws, db, config, before)
    return TaskResult(name=task.name, agent=task.agent, prompt=task.prompt, status=status,
                      done=status == "done", correct=status == "done" and verdict.ok, reason=verdict.reason,
                      answer=answer[:300], wall_s=round(wall, 1), acted=acted)


def _judge(task: SuiteTask, answer: str, ws: Path, db: Path, config: Config,
           before: dict[str, bytes]) -> Verdict:
    with Store.open(db, config.enabled_agents()) as store:  # its own connection, in this thread
        return judge(task, answer, ws, store, before)


async def run_suite(base: Config, model_arg: str | None, err: Console, *, ablate: Sequence[str] = (),
                    rounds: int = 1, pattern: str | None = None,
                    keep: Path | None = None, where_acted: bool = False,
                    journal: Path | None = None) -> list[SuiteFigures]:
    """The suite (or the tasks matching `pattern`) with the default harness (and each
    variant named in `ablate`, from harness.ABLATIONS), `rounds` times, interleaved in
    an order rotated each round; one SuiteFigures per harness. `keep`: a directory (made
    by the caller; with a journal, it may hold an earlier run's) that keeps every task's
    home and workspace instead of a temporary one. `where_acted`: the default runs first
    in each round, and a variant reruns only the tasks in which a lever it turns off
    acted in that round's default run; the others carry the default's result over (a
    lever that never acted changed nothing the model was shown or offered, nor what
    became of its output). `journal`: a file keeping each task run as it finishes; the
    runs it already holds are reused (app/bench/journal.py)."""
    try:
        tasks = select(pattern)
    except re.error as err:
        raise InvalidArgument(f"--tasks {pattern!r}: not a regular expression ({err})") from None
    if not tasks:
        raise InvalidArgument(f"--tasks {pattern!r} matches no suite task (agent/name)")
    model = resolve_model_path(model_arg, base.inference.model)
    variants = {"default": DEFAULT, **{name: ABLATIONS[name] for name in ablate}}
    results: dict[str, list[list[TaskResult]]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        book: Journal | None = None
        if journal is not None:
            header = await asyncio.to_thread(header_for, model, base.inference)
            book = stack.enter_context(await asyncio.to_thread(open_journal, journal, header))
            runs = f"{book.reused} earlier task run{'' if book.reused == 1 else 's'}"
            err.print(f"[dim]journal: {runs} reused ({escape(str(journal))})[/]")
        if keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentdeck-suite-")))
            stack.enter_context(removed_on_sigterm(tmp))
        else:
            tmp = keep
        for round_ in range(rounds):
            ablations = list(variants.items())[1:]
            turns = ([("default", DEFAULT), *order(ablations, round_)] if where_acted
                     else order(list(variants.items()), round_))
            for name, harness in turns:
                err.print(f"[dim]round {round_ + 1}/{rounds}: harness {name}[/]")
                found: list[TaskResult] = []
                for i, task in enumerate(tasks):  # one at a time: a checker sees only its task's effects
                    if where_acted and name != "default":
                        same = results["default"][round_][i]
                        if not levers_off(harness) & set(same.acted):
                            found.append(msgspec.structs.replace(same, carried=True))
                            continue
                    key = f"{task.agent}/{task.name}"
                    earlier = book.get(round_, name, key) if book else None
                    if earlier is not None:
                        found.append(earlier)
                        continue
                    with LoadProgress(err, f"{key}: {task.prompt}") as progress:
                        engine = build_backend(base.inference, model=model, progress=progress)
                    result = await run_task(task, _fresh(tmp / f"{round_}-{name}-{i}"), engine,
                                            harness, base.inference)
                    if book:
                        await asyncio.to_thread(book.add, round_, name, key, result)
                    err.print(f"[dim]  {_mark(result)} {key} ({result.wall_s:.0f} s): "
                              f"{escape(result.reason)}[/]")  # a file's "[server]" is text, not markup
                    found.append(result)
                results[name].append(found)
    return [figures(model.name, name, per_round) for name, per_round in results.items()]


@contextlib.contextmanager
def removed_on_sigterm(path: Path) -> Iterator[None]:
    """While inside: a SIGTERM first removes `path` (the suite's temporary homes, a few MB
    per task run), then ends the process as SIGTERM's default does, at once. Not a
    cancellation: a model call in its thread cannot be interrupted, and a stop must not
    wait for it. The journal loses nothing (each line is synced; a torn one is dropped).
    Off the main thread signals are not ours to set, and nothing changes."""

    def on_sigterm(_signum: int, _frame: object) -> None:
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fresh(where: Path) -> Path:
    """`where`, or where.1, .2, ... if a run stopped before its journal line left it."""
    tried, n = where, 0
    while tried.exists():
        n += 1
        tried = where.with_name(f"{where.name}.{n}")
    return tried


def figures(model: str, harness: str, per_round: list[list[TaskResult]]) -> SuiteFigures:
    count = len(per_round[0])
    done = spread(sum(x.done for x in found) / count for found in per_round)
    correct = spread(sum(x.correct for x in found) / count for found in per_round)
    tallies = [TaskTally(name=x.name, agent=x.agent, done=sum(found[i].done for found in per_round),
                         correct=sum(found[i].correct for found in per_round))
               for i, x in enumerate(per_round[0])]
    return SuiteFigures(model=model, harness=harness, tasks=count, rounds=len(per_round),
                        done_share=Share(*done), correct_share=Share(*correct), per_task=tallies,
                        results=per_round)


def _mark(result: TaskResult) -> str:
    return "correct" if result.correct else "wrong" if result.done else result.status


def _share(share: Share) -> str:
    if share.low == share.high:
        return f"{share.median:.0%}"
    return f"{share.median:.0%} ({share.low:.0%}–{share.high:.0%})"


def print_suite(every: list[SuiteFigures]) -> None:
    """Per variant: each task's last-round line and its tally over rounds; then the shares."""
    for fig in every:
        line(f"harness {fig.harness}:")
        for tally, result in zip(fig.per_task, fig.results[-1], strict=True):
            line(f"  {_mark(result):<8} {tally.agent}/{tally.name}: done {tally.done}/{fig.rounds}, "
                 f"correct {tally.correct}/{fig.rounds} — {result.reason} -> {result.answer[:120]}")
    for fig in every:
        runs = [x for found in fig.results for x in found]
        carried = sum(x.carried for x in runs)
        rerun = (f" ({len(runs) - carried} of {len(runs)} task runs rerun, where the lever acted)"
                 if carried else "")
        line(f"suite ({fig.model}, harness {fig.harness}, {fig.tasks} tasks, {fig.rounds} round(s), "
             f"median): {_share(fig.done_share)} done, {_share(fig.correct_share)} verified correct{rerun}")
        if fig.harness == "default" and any(x.acted for x in runs):
            line(f"  levers that acted, in how many of its {len(runs)} task runs: " + ", ".join(
                f"{lever} {count}" for lever, count in acted_counts(runs)))


def acted_counts(runs: list[TaskResult]) -> list[tuple[str, int]]:
    """Each lever that acted, with the number of task runs it acted in; most first."""
    counts: dict[str, int] = {}
    for x in runs:
        for lever in x.acted:
            counts[lever] = counts.get(lever, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
