"""`agentdeck bench crew --suite`: how often the crew gets simple workstation tasks right.

Each task has a checker that knows the true answer (from psutil or the filesystem). The
whole crew runs them with the real model in a temporary home whose rules let dev write
files (the suite measures the agents, not the gate). Reported: the share done and the
share verified correct. Figures, never assertions.

`--ablate` measures what each lever of the harness is worth: the suite with the default
harness and with each lever off in turn (grammar, rules first, tool examples, compact
results), interleaved round by round so that a noisy machine affects all alike.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil
from rich.console import Console

from agents.config import Config, RuleConfig, parse_config
from agents.crew.harness import ABLATIONS, DEFAULT, Harness
from agents.inference import build_backend, resolve_model_path
from agents.protocol import OWNER
from agents.runtime import Host
from agents.store import queries
from agents.store import reducers as r
from app.bench.harness import order
from app.progress import LoadProgress

Checker = Callable[[str, Path], bool]
TASK_DEADLINE_S = 180.0  # a task still unfinished then counts as not done


def _disk_percent_matches(answer: str, _ws: Path) -> bool:
    truth = psutil.disk_usage("/").percent
    return any(abs(float(x) - truth) <= 1.0 for x in re.findall(r"(\d+(?:\.\d+)?)\s*%", answer))


def _notes_written(_answer: str, ws: Path) -> bool:
    path = ws / "notes.txt"
    return path.is_file() and path.read_text().strip() == "hello"


def _top_memory_process(answer: str, _ws: Path) -> bool:
    procs = [(p.info["memory_info"].rss, p.info["name"] or "")
             for p in psutil.process_iter(["memory_info", "name"]) if p.info["memory_info"]]
    top = {name for _, name in sorted(procs, reverse=True)[:3]}  # it may change while the task runs
    return any(name and name in answer for name in top)


def _memory_percent_matches(answer: str, _ws: Path) -> bool:
    truth = psutil.virtual_memory().percent
    return any(abs(float(x) - truth) <= 2.0 for x in re.findall(r"(\d+(?:\.\d+)?)\s*%", answer))


def _file_count(answer: str, ws: Path) -> bool:
    return str(sum(1 for p in ws.iterdir() if p.is_file())) in re.findall(r"\d+", answer)


SUITE: list[tuple[str, str, Checker]] = [
    ("ops", "How full is the disk? Give the percentage.", _disk_percent_matches),
    ("dev", "Create notes.txt containing hello", _notes_written),
    ("ops", "Which process uses the most memory?", _top_memory_process),
    ("ops", "How much of the memory is in use? Give the percentage.", _memory_percent_matches),
    ("dev", "How many files are in the workspace?", _file_count),
]


class SuiteFigures(msgspec.Struct, kw_only=True):
    model: str
    harness: str  # "default" or the lever turned off
    tasks: int
    done: int
    correct: int
    results: list[dict[str, object]]


async def run_suite(base: Config, model_arg: str | None, err: Console, *, ablate: bool = False,
                    rounds: int = 1) -> list[SuiteFigures]:
    """The suite with the default harness (and, with ablate, each lever off), `rounds`
    times, interleaved in an order rotated each round; one SuiteFigures per harness."""
    model = resolve_model_path(model_arg, base.inference.model)
    variants = {"default": DEFAULT, **(ABLATIONS if ablate else {})}
    results: dict[str, list[dict[str, object]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="agentdeck-suite-") as tmp:
        for round_ in range(rounds):
            for name, harness in order(list(variants.items()), round_):
                err.print(f"[dim]round {round_ + 1}/{rounds}: harness {name}[/]")
                results[name] += await _one_pass(base, model, harness, Path(tmp) / f"{round_}-{name}", err)
    return [SuiteFigures(model=model.name, harness=name, tasks=len(found),
                         done=sum(x["status"] == "done" for x in found),
                         correct=sum(bool(x["correct"]) for x in found), results=found)
            for name, found in results.items()]


async def _one_pass(base: Config, model: Path, harness: Harness, tmp: Path,
                    err: Console) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for agent, text, check in SUITE:  # one at a time: a task's checker sees only its own effects
        home, ws = tmp / f"home{len(results)}", tmp / f"ws{len(results)}"
        home.mkdir(parents=True)
        ws.mkdir()
        for i in range(3):
            (ws / f"data{i}.csv").write_text("a,b\n1,2\n")
        config = parse_config(f'workspace = "{ws}"\nschedules = []\n')
        writes = RuleConfig(agent="dev", tool="write_file", pattern="*", decision="allow")
        config.rules = [*config.rules, writes]  # the suite measures the agents, not the gate
        config.inference = base.inference
        with LoadProgress(err, f"{agent}: {text}") as progress:
            engine = build_backend(config.inference, model=model, progress=progress)
            host = Host(home / "agentdeck.db", config, backend=engine, crew=True, harness=harness)
            async with host:
                task = await host.store.write(r.create_task, OWNER, text, owner=agent)
                assert host.crew is not None
                await host.crew.wait_idle(TASK_DEADLINE_S)
                final = await host.store.read(queries.task, task.id)
        answer = (final.result or "") if final else ""
        done = final is not None and final.status == "done"
        results.append({"agent": agent, "task": text, "status": final.status if final else "?",
                        "answer": answer[:200], "correct": done and check(answer, ws)})
    return results
