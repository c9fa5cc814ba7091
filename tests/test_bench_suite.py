"""The effectiveness suite's checkers, with no model: each task's setup builds what its
checker reads, a right answer (or result) passes and a plausible wrong one fails; a
question that wrote to the workspace fails whatever it answered. One task runs end to
end through the real crew on the scripted backend."""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from helpers import AGENTS, agentdeck_cmd, reflect, subprocess_env
from rich.console import Console
from scripted_backend import ScriptedBackend, queued

from agents.config import InferenceConfig, default_config
from agents.crew.harness import ABLATIONS, DEFAULT, Harness
from agents.errors import InvalidArgument
from agents.protocol import OWNER
from agents.store import Store, queries
from agents.store import reducers as r
from app.bench import suite
from app.bench import suite_tasks as st
from app.bench.suite import TaskResult, figures, print_suite, run_suite, run_task

BY_NAME = {t.name: t for t in st.SUITE}

# An answer maker: given the prepared workspace and store, it may change them (as the
# agent would) and returns the answer text.
Answer = Callable[[Path, Store], str]


def _disk() -> float:
    return psutil.disk_usage("/").percent


def _top_process() -> str:
    procs = [(p.info["memory_info"].rss, p.info["name"] or "")
             for p in psutil.process_iter(["memory_info", "name"]) if p.info["memory_info"]]
    return max(procs)[1]


def _uptime_h() -> float:
    return (time.time() - psutil.boot_time()) / 3600


def _write(name: str, text: str, answer: str = "done") -> Answer:
    def act(ws: Path, _store: Store) -> str:
        (ws / name).write_text(text)
        return answer
    return act


def _say(text: str | Callable[[], str]) -> Answer:
    return lambda _ws, _store: text if isinstance(text, str) else text()


def _delegate(prompt: str, owners: tuple[str, ...], then: Answer) -> Answer:
    """As lead would leave the store: the person's task and a subtask per owner."""
    def act(ws: Path, store: Store) -> str:
        root = store.write(r.create_task, OWNER, prompt, owner="lead")
        for owner in owners:
            store.write(r.create_task, OWNER, f"part for {owner}", owner=owner, parent_id=root.id)
        return then(ws, store)
    return act


def _review(name: str, line_shift: int, with_code: bool) -> Answer:
    bug = st.BUGS[name.removeprefix("diff-")]

    def act(ws: Path, _store: Store) -> str:
        line = st.added_line_number((ws / "change.diff").read_text(), bug.fragment)
        assert line is not None
        code = f" `{bug.fragment}`" if with_code else ""
        return f"Line {line + line_shift}:{code} this is a bug ({bug.kinds[0]})."
    return act


CPUS = psutil.cpu_count() or 1
FILES_AND_CORES = st.P_LEAD_FILES
ROWS = len(st.ROWS.splitlines()) - 1

# task name -> (a right answer, a plausible wrong one)
CASES: dict[str, tuple[Answer, Answer]] = {
    "disk-percent": (_say(lambda: f"The disk is {_disk():.1f}% full."),
                     _say(lambda: f"The disk is {_disk() + 5:.1f}% full.")),
    "memory-percent": (_say(lambda: f"{psutil.virtual_memory().percent:.0f}% of memory is in use"),
                       _say(lambda: f"{(psutil.virtual_memory().percent + 40) % 100:.0f}% of memory is in use")),
    "cpu-count": (_say(f"It has {CPUS} CPU cores."), _say(f"It has {CPUS * 2 + 3} CPU cores.")),
    "uptime": (_say(lambda: f"Up for {_uptime_h():.2f} hours."),
               _say(lambda: f"Up for {_uptime_h() * 2 + 5:.1f} hours.")),
    "memory-total": (_say(lambda: f"{psutil.virtual_memory().total / 2**30:.1f} GiB in total"),
                     _say(lambda: f"{psutil.virtual_memory().total / 2**30 + 4:.1f} GiB in total")),
    "disk-free": (_say(lambda: f"{psutil.disk_usage('/').free / 2**30:.1f} GiB free"),
                  _say(lambda: f"{psutil.disk_usage('/').free / 2**30 * 2 + 10:.1f} GiB free")),
    "top-memory": (_say(_top_process), _say("The process using the most memory is nonexistent-proc-xyz.")),
    "create-notes": (_write("notes.txt", "hello\n"), _write("notes.txt", "hello world\n")),
    "create-todo": (_write("todo.md", "- buy milk\n- call Bob\n"), _write("todo.md", "- buy milk\n")),
    "edit-port": (_write("settings.ini", st.SETTINGS.replace("8080", "9090")),
                  _write("settings.ini", "[server]\nhost = 127.0.0.1\nport = 9090\n")),  # dropped workers
    "append-changelog": (_write("CHANGELOG.md", st.CHANGELOG + "- fixed the login bug\n"),
                         _write("CHANGELOG.md", "- fixed the login bug\n")),
    "edit-json": (_write("config.json", json.dumps({"name": "demo", "debug": True, "retries": 5})),
                  _write("config.json", json.dumps({"name": "demo", "retries": 5}))),
    "remove-line": (_write("app.env", "NAME=demo\nPORT=5000\n"), _write("app.env", "NAME=demo\n")),
    "fix-typo": (_write("guide.txt", st.GUIDE.replace("teh", "the")),
                 _write("guide.txt", "Install the package, then run the tests.\n")),
    "typo-to-review": (_write("guide.txt", st.GUIDE.replace("teh", "the")), _say("Fixed the typo.")),
    "count-files": (_say(f"There are {len(st.BASE_FILES)} files."),
                    _say(f"There are {len(st.BASE_FILES) + 1} files.")),
    "sum-numbers": (_say("17 + 25 + 8 = 50"), _say("17 + 25 + 8 = 49")),
    "count-rows": (_say(f"cities.csv has {ROWS} data rows."), _say(f"cities.csv has {ROWS + 1} data rows.")),
    "largest-file": (_say("cities.csv is the largest."), _say("data1.csv is the largest.")),
    "read-port": (_say("The port is 8080."), _say("The port is 9090.")),
    **{name: (_review(name, 0, with_code=False), _review(name, 3, with_code=False))
       for name in BY_NAME if name.startswith("diff-")},
    "disk-to-file": (_delegate(st.P_LEAD_DISK, ("ops", "dev"), _write("disk.txt", f"{_disk():.1f}\n")),
                     _delegate(st.P_LEAD_DISK, ("ops", "dev"), _write("disk.txt", f"{_disk() + 7:.1f}\n"))),
    "files-and-cores": (
        _delegate(FILES_AND_CORES, ("dev", "ops"), _say(f"{len(st.BASE_FILES)} files; {CPUS} CPU cores.")),
        _say(f"{len(st.BASE_FILES)} files; {CPUS} CPU cores.")),  # right figures, but lead never delegated
    "memory-and-rows": (
        _delegate(st.P_LEAD_ROWS, ("ops", "dev"),
                  _say(lambda: f"memory {psutil.virtual_memory().percent:.0f}%; cities.csv has {ROWS} rows")),
        _delegate(st.P_LEAD_ROWS, ("ops", "dev"),
                  _say(lambda: f"memory {psutil.virtual_memory().percent:.0f}%; cities.csv has {ROWS + 1} rows"))),
    "what-failed": (_say("Task 2, updating the web server package, failed: apt could not reach the mirror."),
                    _say("The photo backup failed because the disk was full.")),
    "backup-count": (_say("It copied 212 files."), _say("It copied 211 files.")),
    "who-rotated": (_say("ops rotated the logs."), _say("dev rotated the logs.")),
    "date-lesson": (_say("They fail unless TZ=UTC is set."), _say("They were flaky; we reran them.")),
    "done-count": (_say("3 earlier tasks were completed."), _say("4 earlier tasks were completed.")),
}


@pytest.fixture
def prepared(tmp_path: Path) -> Iterator[Callable[[st.SuiteTask], tuple[Path, Store, dict[str, bytes]]]]:
    stores: list[Store] = []

    def prepare(task: st.SuiteTask) -> tuple[Path, Store, dict[str, bytes]]:
        ws = tmp_path / f"ws-{task.name}-{len(stores)}"
        ws.mkdir()
        store = Store.open(tmp_path / f"db-{task.name}-{len(stores)}.db", AGENTS)
        stores.append(store)
        task.setup(ws, store)
        return ws, store, st.snapshot(ws)

    yield prepare
    for store in stores:
        store.close()


def test_the_suite_covers_the_five_agents_with_25_named_tasks_each_with_cases() -> None:
    assert len(st.SUITE) >= 25
    assert {t.agent for t in st.SUITE} == set(AGENTS)
    assert len(BY_NAME) == len(st.SUITE)  # names are unique: --tasks and the tallies use them
    assert set(CASES) == set(BY_NAME)  # a new task comes with its right and wrong answers here


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_a_right_answer_passes_the_checker(name: str, prepared) -> None:
    task = BY_NAME[name]
    ws, store, before = prepared(task)
    answer = CASES[name][0](ws, store)
    verdict = st.judge(task, answer, ws, store, before)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_a_plausible_wrong_answer_fails_the_checker(name: str, prepared) -> None:
    task = BY_NAME[name]
    ws, store, before = prepared(task)
    answer = CASES[name][1](ws, store)
    verdict = st.judge(task, answer, ws, store, before)
    assert not verdict.ok, f"{answer!r} passed: {verdict.reason}"
    assert verdict.reason


@pytest.mark.parametrize("name", sorted(n for n, t in BY_NAME.items() if t.question))
def test_a_question_that_wrote_to_the_workspace_fails_even_when_its_answer_is_right(name: str, prepared) -> None:
    task = BY_NAME[name]
    ws, store, before = prepared(task)
    answer = CASES[name][0](ws, store)
    (ws / "scratch.txt").write_text("the agent wrote this")
    verdict = st.judge(task, answer, ws, store, before)
    assert not verdict.ok
    assert "scratch.txt" in verdict.reason


def test_a_percentage_counts_only_where_the_answer_gives_it_for_its_subject(prepared) -> None:
    task = BY_NAME["memory-percent"]
    ws, store, before = prepared(task)
    truth = psutil.virtual_memory().percent
    # A swap or CPU figure near the truth is not the memory figure (the 0.5B did this).
    wrong = f"The memory is in use by {truth + 40:.0f}% of the CPU cores; swap {truth:.0f}% used"
    assert not st.judge(task, wrong, ws, store, before).ok
    echo = f"cpu: {truth + 40:.0f}% of 2 cores; memory: 1 GiB used of 23 GiB ({truth:.0f}%); swap 90% used"
    assert st.judge(task, echo, ws, store, before).ok


def test_a_percentage_is_not_a_row_count(prepared) -> None:
    # The wrong answer's memory figure once matched the row count (memory at 3.7%, 4 rows).
    task = BY_NAME["count-rows"]
    ws, store, before = prepared(task)
    assert not st.judge(task, "memory 4%; cities.csv has 5 rows", ws, store, before).ok
    assert not st.judge(task, "4 percent of the file; 5 rows", ws, store, before).ok
    assert st.judge(task, "memory 4%; cities.csv has 4 rows", ws, store, before).ok


@pytest.mark.parametrize("name", sorted(n for n in BY_NAME if n.startswith("diff-")))
def test_a_review_that_quotes_the_buggy_code_counts_as_naming_its_line(name: str, prepared) -> None:
    task = BY_NAME[name]
    ws, store, before = prepared(task)
    assert st.judge(task, _review(name, 5, with_code=True)(ws, store), ws, store, before).ok


def test_each_review_setup_plants_its_bug_on_an_added_line_of_a_valid_diff(prepared) -> None:
    for bug_name, bug in st.BUGS.items():
        ws, _store, _ = prepared(BY_NAME[f"diff-{bug_name}"])
        diff = (ws / "change.diff").read_text()
        line = st.added_line_number(diff, bug.fragment)
        assert line is not None
        assert bug.fragment in (ws / bug.path).read_text().splitlines()[line - 1]


def test_the_scribe_setup_leaves_finished_history_and_a_shared_lesson(prepared) -> None:
    _ws, store, _ = prepared(BY_NAME["what-failed"])
    tasks = store.read(queries.tasks)
    assert sorted(t.status for t in tasks) == ["done", "done", "done", "failed"]  # nothing for the crew to pick up
    assert [m.scope for m in store.read(queries.search_memory, "date tests")] == ["shared"]
    assert len(store.read(queries.messages, "agent-logs")) == len(st.HISTORY)


def test_tasks_pattern_selects_by_agent_and_name() -> None:
    assert {t.agent for t in st.select("ops/")} == {"ops"}
    assert [t.name for t in st.select("edit-port")] == ["edit-port"]
    assert st.select(None) == st.SUITE
    assert st.select("zzz-no-such") == []


async def test_a_bad_tasks_pattern_is_refused_before_any_model_loads() -> None:
    for pattern in ("(", "zzz-no-such"):
        with pytest.raises(InvalidArgument, match="--tasks"):
            await run_suite(default_config(), None, Console(stderr=True), pattern=pattern)


@pytest.mark.timeout(60)
def test_keep_takes_only_a_new_directory_and_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    done = subprocess.run(agentdeck_cmd("bench", "crew", "--suite", "--keep", str(tmp_path / "kept")),
                          env=subprocess_env(tmp_path / "home"), capture_output=True, text=True, timeout=50)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"agentdeck: --keep {tmp_path / 'kept'}: File exists "
                                                "(give a new directory)"]


def test_figures_are_medians_over_rounds_with_per_task_tallies() -> None:
    def result(name: str, done: bool, correct: bool) -> TaskResult:
        return TaskResult(name=name, agent="ops", prompt="p", status="done" if done else "failed", done=done,
                          correct=correct, reason="", answer="", wall_s=1.0)

    rounds = [[result("a", True, True), result("b", True, False)],
              [result("a", True, True), result("b", False, False)],
              [result("a", True, False), result("b", True, True)]]
    fig = figures("m", "default", rounds)
    assert (fig.done_share.median, fig.done_share.low, fig.done_share.high) == (1.0, 0.5, 1.0)
    assert (fig.correct_share.median, fig.correct_share.low, fig.correct_share.high) == (0.5, 0.5, 0.5)
    assert [(t.name, t.done, t.correct) for t in fig.per_task] == [("a", 3, 2), ("b", 2, 1)]


# --- end to end through the real crew (scripted model) ---

def _dev_writes(path: str, content: str, final: str) -> dict[str, list[str]]:
    # No triage call: the person gave dev a file task dev's tools can do (harness.keep_own).
    return {"dev": [json.dumps({"tool": "write_file", "arguments": {"path": path, "content": content}}),
                    json.dumps({"final": final}), reflect("write the file, then say so")]}


@pytest.mark.timeout(60)
async def test_a_change_task_runs_through_the_crew_and_is_verified(tmp_path: Path) -> None:
    backend = ScriptedBackend(queued(_dev_writes("notes.txt", "hello", "created notes.txt")))
    result = await run_task(BY_NAME["create-notes"], tmp_path, backend, DEFAULT,  # type: ignore[arg-type]
                            InferenceConfig(), deadline_s=30)
    assert (result.status, result.correct) == ("done", True), result.reason
    assert (tmp_path / "ws" / "notes.txt").read_text() == "hello"
    assert {"verify_changes", "keep_own"} <= set(result.acted)  # read back; acted on, not re-routed
    assert "questions_read_only" not in result.acted  # not a question


@pytest.mark.timeout(60)
async def test_where_acted_reruns_a_lever_off_only_in_the_tasks_where_it_acted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The carrying over itself (the promise behind it is tests/test_levers_acted.py):
    each round's default runs first and says which levers acted per task."""
    acted = {"disk-percent": ["evidence", "grammar"], "memory-percent": ["grammar"]}
    ran: list[tuple[int, str, str]] = []

    async def fake_run_task(task: st.SuiteTask, where: Path, backend: object, harness: Harness,
                            inference: InferenceConfig) -> TaskResult:
        name = next(n for n, h in {"default": DEFAULT, **ABLATIONS}.items() if h == harness)
        ran.append((int(where.name.split("-")[0]), name, task.name))
        return TaskResult(name=task.name, agent=task.agent, prompt=task.prompt, status="done", done=True,
                          correct=harness == DEFAULT, reason="", answer="", wall_s=0.0, acted=acted[task.name])

    monkeypatch.setattr(suite, "run_task", fake_run_task)
    monkeypatch.setattr(suite, "build_backend", lambda *a, **k: None)
    every = await run_suite(default_config(), None, Console(file=io.StringIO()),  # the embedded model's path
                            ablate=["no calculator", "no evidence rule"], rounds=2,
                            pattern="ops/(disk|memory)-percent", where_acted=True)
    for round_ in (0, 1):  # the default first, whatever the rotation; a lever off only where it acted
        assert [(n, t) for r_, n, t in ran if r_ == round_] == [
            ("default", "disk-percent"), ("default", "memory-percent"), ("no evidence rule", "disk-percent")]
    by = {fig.harness: fig for fig in every}
    assert [[(x.correct, x.carried) for x in found] for found in by["no evidence rule"].results] == \
        [[(False, False), (True, True)]] * 2
    assert by["no calculator"].correct_share.median == 1.0  # never acted: the default's results
    assert all(x.carried for found in by["no calculator"].results for x in found)
    print_suite(every)
    said = capsys.readouterr().out.splitlines()
    assert "  levers that acted, in how many of its 4 task runs: grammar 4, evidence 2" in said
    assert any(s.startswith("suite (") and "harness no evidence rule" in s and "50% verified correct "
               "(2 of 4 task runs rerun, where the lever acted)" in s for s in said), said


@pytest.mark.timeout(60)
def test_where_acted_without_ablate_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(agentdeck_cmd("bench", "crew", "--suite", "--where-acted", "--keep", str(tmp_path / "k")),
                          env=subprocess_env(tmp_path / "home"), capture_output=True, text=True, timeout=50)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["agentdeck: --where-acted needs --ablate: it reruns ablations "
                                                "where their levers acted"]
    assert not (tmp_path / "k").exists()  # refused before anything was made
