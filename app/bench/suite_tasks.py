"""The effectiveness suite's tasks, as data: who gets each, what it says, what its
workspace and store hold first, and a checker that knows the true answer.

A checker computes the truth when it runs (psutil for the machine, the workspace's files,
the store's tasks and memory) and says why it judged as it did. A task marked `question`
must also leave the workspace as its setup left it: `judge` checks that for every one.
Plain functions, no model: tests/test_bench_suite.py checks each against a right and a
plausible wrong answer.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil

from agents.protocol import OWNER
from agents.store import Store, queries
from agents.store import reducers as r


class Verdict(msgspec.Struct, frozen=True):
    ok: bool
    reason: str


Setup = Callable[[Path, Store], None]
Checker = Callable[[str, Path, Store], Verdict]


class SuiteTask(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # agent/name is what `--tasks PATTERN` matches
    agent: str
    prompt: str
    setup: Setup
    check: Checker
    question: bool = True  # a question must leave the workspace as setup left it


# --- reading an answer ---

NUMBER = r"(\d+(?:[.,]\d+)?)"


def _num(text: str) -> float:
    return float(text.replace(",", "."))


def numbers(answer: str) -> list[float]:
    return [_num(x) for x in re.findall(NUMBER, answer)]


def percentages(answer: str) -> list[float]:
    return [_num(x) for x in re.findall(NUMBER + r"\s*(?:%|percent)", answer, re.I)]


def percentage_about(answer: str, subject: str) -> list[float]:
    """The percentage the answer gives for `subject`: the first after its first mention in
    the same clause (up to `;` or a line end), else the last before it, else the answer's
    first. "memory 7%, swap 0%" claims 7%, whatever else lies near the truth."""
    at = re.search(subject, answer, re.I)
    if at is None:
        return percentages(answer)[:1]
    clause = re.split(r"[;\n]", answer[at.start():], maxsplit=1)[0]
    return percentages(clause)[:1] or percentages(answer[:at.start()])[-1:]


def _words(text: str) -> set[str]:
    return {w.lower().strip(".") for w in re.findall(r"[\w.=-]+", text)}


def ok(reason: str) -> Verdict:
    return Verdict(True, reason)


def wrong(reason: str) -> Verdict:
    return Verdict(False, reason)


def _near(found: list[float], truth: float, tolerance: float, what: str) -> Verdict:
    if any(abs(x - truth) <= tolerance for x in found):
        return ok(f"{what}: {truth:g} (±{tolerance:g}) named")
    return wrong(f"{what}: true {truth:g} (±{tolerance:g}), answer named {found or 'no figure'}")


# --- the workspace ---

BASE_FILES = {"data0.csv": "a,b\n1,2\n", "data1.csv": "a,b\n3,4\n5,6\n", "readme.txt": "A small workspace.\n"}


def write_files(ws: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(text)


def files(extra: dict[str, str] | None = None) -> Setup:
    """A setup writing the base files and `extra` into the workspace."""
    def setup(ws: Path, _store: Store) -> None:
        write_files(ws, {**BASE_FILES, **(extra or {})})
    return setup


def snapshot(ws: Path) -> dict[str, bytes]:
    """Every file under the workspace, by relative path: what `judge` compares."""
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


def judge(task: SuiteTask, answer: str, ws: Path, store: Store, before: dict[str, bytes]) -> Verdict:
    """The task's own checker, after the rule every question shares: it wrote nothing."""
    if task.question:
        after = snapshot(ws)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            return wrong(f"a question changed the workspace: {', '.join(changed)}")
    return task.check(answer, ws, store)


def _file_is(name: str, expected: str) -> Checker:
    """The file holds exactly `expected` (a final newline either way)."""
    def check(_answer: str, ws: Path, _store: Store) -> Verdict:
        path = ws / name
        if not path.is_file():
            return wrong(f"{name} does not exist")
        text = path.read_text(errors="replace")
        if text.rstrip("\n") != expected.rstrip("\n"):
            return wrong(f"{name} holds {text[:80]!r}, not {expected[:80]!r}")
        return ok(f"{name} holds what was asked")
    return check


# --- ops: the machine ---

def _disk_percent(answer: str, ws: Path, _store: Store) -> Verdict:
    truths = {psutil.disk_usage(str(ws)).percent, psutil.disk_usage("/").percent}  # either disk is fair
    found = percentage_about(answer, r"\bdisk")
    verdicts = [_near(found, t, 1.0, "disk use %") for t in truths]
    return next((v for v in verdicts if v.ok), verdicts[0])


def _memory_percent(answer: str, _ws: Path, _store: Store) -> Verdict:
    return _near(percentage_about(answer, r"\b(memory|ram)\b"), psutil.virtual_memory().percent, 3.0,
                 "memory use %")


def _cpu_count(answer: str, _ws: Path, _store: Store) -> Verdict:
    truth = {psutil.cpu_count(), psutil.cpu_count(logical=False)} - {None}
    found = {int(x) for x in numbers(answer) if x == int(x)}
    if found & truth:
        return ok(f"CPU cores: {sorted(truth)} named")
    return wrong(f"CPU cores: true {sorted(truth)}, answer named {sorted(found) or 'no figure'}")


UNIT_HOURS = {"min": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60, "h": 1, "hr": 1, "hrs": 1, "hour": 1,
              "hours": 1, "d": 24, "day": 24, "days": 24}


def _uptime(answer: str, _ws: Path, _store: Store) -> Verdict:
    truth = (time.time() - psutil.boot_time()) / 3600
    found = [_num(n) * UNIT_HOURS[u.lower()] for n, u in
             re.findall(NUMBER + r"\s*(" + "|".join(sorted(UNIT_HOURS, key=len, reverse=True)) + r")\b",
                        answer, re.I)]
    return _near(found, round(truth, 2), max(0.25, truth * 0.03), "uptime in hours")


def _sizes(answer: str) -> list[float]:
    """Figures given in GiB (or GB: both read as given, the checker tries both scales)."""
    return [_num(x) for x in re.findall(NUMBER + r"\s*(?:GiB|GB|G)\b", answer)]


def _memory_total(answer: str, _ws: Path, _store: Store) -> Verdict:
    total = psutil.virtual_memory().total
    found = _sizes(answer)
    gib, gb = _near(found, round(total / 2**30, 2), 0.15, "total memory GiB"), _near(
        found, round(total / 1e9, 2), 0.15, "total memory GB")
    return gib if gib.ok or not gb.ok else gb


def _disk_free(answer: str, ws: Path, _store: Store) -> Verdict:
    free = psutil.disk_usage(str(ws)).free
    found = _sizes(answer)
    gib = _near(found, round(free / 2**30, 2), max(0.5, free / 2**30 * 0.02), "free disk GiB")
    gb = _near(found, round(free / 1e9, 2), max(0.5, free / 1e9 * 0.02), "free disk GB")
    return gib if gib.ok or not gb.ok else gb


def _top_memory_process(answer: str, _ws: Path, _store: Store) -> Verdict:
    procs = [(p.info["memory_info"].rss, p.info["name"] or "")
             for p in psutil.process_iter(["memory_info", "name"]) if p.info["memory_info"]]
    top = [name for _, name in sorted(procs, reverse=True)[:3] if name]  # it may change while the task runs
    if any(name in answer for name in top):
        return ok(f"names one of the top three by memory: {top}")
    return wrong(f"the top three by memory are {top}")


# --- dev: files in the workspace ---

SETTINGS = "[server]\nhost = 127.0.0.1\nport = 8080\nworkers = 4\n"
CHANGELOG = "# Changelog\n\n- added the export button\n- faster start\n"
CONFIG_JSON = json.dumps({"name": "demo", "debug": True, "retries": 3}, indent=2) + "\n"
APP_ENV = "NAME=demo\nDEBUG=1\nPORT=5000\n"
GUIDE = "Install the package, then run teh tests.\nAsk for help in the channel.\n"
NUMBERS = "17\n25\n8\n"
ROWS = "city,people\nOslo,709000\nBergen,291000\nTrondheim,212000\nStavanger,146000\n"


def _json_is(name: str, expected: dict[str, object]) -> Checker:
    def check(_answer: str, ws: Path, _store: Store) -> Verdict:
        path = ws / name
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return wrong(f"{name} is not readable JSON: {err}")
        if found != expected:
            return wrong(f"{name} holds {found}, not {expected}")
        return ok(f"{name} holds what was asked")
    return check


def _file_count(answer: str, ws: Path, _store: Store) -> Verdict:
    truth = sum(1 for p in ws.iterdir() if p.is_file())
    found = [int(x) for x in numbers(answer) if x == int(x)]
    return ok(f"{truth} files named") if truth in found else wrong(f"{truth} files, answer named {found}")


def _sum_of_numbers(answer: str, ws: Path, _store: Store) -> Verdict:
    addends = [int(x) for x in (ws / "numbers.txt").read_text().split()]
    truth, found = sum(addends), numbers(answer)
    if truth in found and all(x == truth or x in addends for x in found):
        return ok(f"the sum {truth} named (beside the addends at most)")
    return wrong(f"the sum is {truth}; answer named {found or 'no figure'}")


def _row_count(answer: str, ws: Path, _store: Store) -> Verdict:
    rows = len((ws / "cities.csv").read_text().splitlines()) - 1  # the header is not a row
    # A percentage is not a count: lead's "memory 4%; 5 rows" named no 4 rows (it passed
    # when memory use stood at 3.7%).
    counts = re.sub(NUMBER + r"\s*(?:%|percent)", " ", answer, flags=re.I)
    found = [int(x) for x in numbers(counts) if x == int(x)]
    if rows in found:
        return ok(f"{rows} data rows named")
    return wrong(f"{rows} data rows, answer named {found}")


def _largest_file(answer: str, ws: Path, _store: Store) -> Verdict:
    largest = max((p for p in ws.iterdir() if p.is_file()), key=lambda p: p.stat().st_size).name
    others = [p.name for p in ws.iterdir() if p.is_file() and p.name != largest and p.name in answer]
    if largest in answer and not others:
        return ok(f"names {largest} alone")
    return wrong(f"the largest is {largest}; answer named {others or 'none of the files'}")


def _port_value(answer: str, ws: Path, _store: Store) -> Verdict:
    match = re.search(r"^port\s*=\s*(\d+)", (ws / "settings.ini").read_text(), re.M)
    truth = int(match.group(1)) if match else -1
    found = [int(x) for x in numbers(answer) if x == int(x)]
    return ok(f"port {truth} named") if truth in found else wrong(f"port is {truth}, answer named {found}")


# --- review: a diff with a planted bug ---

class PlantedBug(msgspec.Struct, frozen=True):
    path: str
    old: str
    new: str
    fragment: str  # the bug's code, on one added line of the diff
    kinds: tuple[str, ...]  # words that name what is wrong (any one will do)


BUGS = {
    "off-by-one": PlantedBug(
        "inventory.py",
        'def total_stock(items):\n    """The sum of every item\'s count."""\n    total = 0\n'
        "    for item in items:\n        total += item.count\n    return total\n",
        'def total_stock(items):\n    """The sum of every item\'s count."""\n    total = 0\n'
        "    for i in range(1, len(items)):\n        total += items[i].count\n    return total\n",
        "range(1, len(items))", ("off-by-one", "off by one", "first", "skip", "index 0", "zero")),
    "boundary": PlantedBug(
        "access.py",
        'import sys\n\n\n'
        'def may_vote(age):\n    """People aged 18 and over may vote."""\n    return age >= 18\n',
        'import sys\n\n\n'
        'def may_vote(age):\n    """People aged 18 and over may vote."""\n    return age > 18\n',
        "return age > 18", (">=", "exactly 18", "equal", "boundary", "excludes 18", "18-year", "aged 18")),
    "division": PlantedBug(
        "stats.py",
        'def mean(values):\n    """The mean; 0.0 for no values."""\n    if not values:\n        return 0.0\n'
        "    return sum(values) / len(values)\n",
        'def mean(values):\n    """The mean; 0.0 for no values."""\n    total = sum(values)\n'
        "    return total / len(values)\n",
        "return total / len(values)", ("zero", "empty", "zerodivision", "no values")),
    "injection": PlantedBug(
        "users.py",
        'def find_user(db, name):\n    rows = db.execute("SELECT * FROM users WHERE name = ?", (name,))\n'
        "    return rows.fetchone()\n",
        "def find_user(db, name):\n    rows = db.execute(f\"SELECT * FROM users WHERE name = '{name}'\")\n"
        "    return rows.fetchone()\n",
        "WHERE name = '{name}'", ("injection", "parameter", "escap", "sanitiz", "placeholder", "quot")),
}


def diff_text(bug: PlantedBug) -> str:
    return "".join(difflib.unified_diff(bug.old.splitlines(True), bug.new.splitlines(True),
                                        f"a/{bug.path}", f"b/{bug.path}"))


def added_line_number(diff: str, fragment: str) -> int | None:
    """The new file's line number of the added line holding `fragment`."""
    line = 0
    for text in diff.splitlines():
        hunk = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", text)
        if hunk:
            line = int(hunk.group(1)) - 1
        elif text.startswith("+") and not text.startswith("+++"):
            line += 1
            if fragment in text:
                return line
        elif text.startswith(" "):
            line += 1
    return None


def _review_setup(bug: PlantedBug) -> Setup:
    def setup(ws: Path, _store: Store) -> None:
        write_files(ws, {**BASE_FILES, bug.path: bug.new, "change.diff": diff_text(bug)})
    return setup


def _review_check(bug: PlantedBug) -> Checker:
    def check(answer: str, ws: Path, _store: Store) -> Verdict:
        line = added_line_number((ws / "change.diff").read_text(), bug.fragment)
        named = {int(n) for n in re.findall(r"(?:line|l\.|:)\s*(\d+)", answer, re.I)}
        at_bug = line in named or bug.fragment in answer
        kind = next((k for k in bug.kinds if k.lower() in answer.lower()), None)
        if at_bug and kind:
            return ok(f"names line {line} (or its code) and the kind ({kind!r})")
        where = f"line {line}" + (f", answer named lines {sorted(named)}" if named else "")
        return wrong(f"the bug is at {where}; place {'found' if at_bug else 'missed'}, "
                     f"kind {'found' if kind else 'missed'} ({'/'.join(bug.kinds)})")
    return check


# --- lead: split, delegate, combine ---

def subtask_owners(store: Store, prompt: str) -> set[str]:
    """The agents the person's task (found by its title) was delegated to, all levels down."""
    tasks = store.read(queries.tasks)
    roots = {t.id for t in tasks if t.title == prompt and t.parent_id is None}
    owners: set[str] = set()
    frontier = roots
    while frontier:
        children = [t for t in tasks if t.parent_id in frontier]
        owners |= {t.owner for t in children if t.owner}
        frontier = {t.id for t in children}
    return owners


def _delegated(prompt: str, agents: int, then: Callable[[str, Path, Store], Verdict]) -> Checker:
    """At least `agents` different agents got subtasks, and the combined answer is right."""
    def check(answer: str, ws: Path, store: Store) -> Verdict:
        owners = subtask_owners(store, prompt) - {"lead"}
        if len(owners) < agents:
            return wrong(f"delegated to {sorted(owners) or 'nobody'}; the task needs {agents} agents")
        verdict = then(answer, ws, store)
        return Verdict(verdict.ok, f"delegated to {sorted(owners)}; {verdict.reason}")
    return check


def _both(*checks: Checker) -> Checker:
    def check(answer: str, ws: Path, store: Store) -> Verdict:
        verdicts = [c(answer, ws, store) for c in checks]
        return Verdict(all(v.ok for v in verdicts), "; ".join(v.reason for v in verdicts))
    return check


def _disk_file(_answer: str, ws: Path, store: Store) -> Verdict:
    path = ws / "disk.txt"
    if not path.is_file():
        return wrong("disk.txt does not exist")
    text = path.read_text(errors="replace").strip()
    if not re.fullmatch(NUMBER + r"\s*%?", text):
        return wrong(f"disk.txt holds {text[:40]!r}, not just a figure")
    return _disk_percent(text.rstrip("%") + "%", ws, store)


# --- scribe: what happened before ---

HISTORY = [  # owner, title, how it ended, its result
    ("ops", "Back up the photos folder", "done", "copied 212 files to /backup/photos"),
    ("dev", "Update the web server package", "failed", "apt could not reach the package mirror"),
    ("ops", "Rotate the logs", "done", "rotated 3 log files in /var/log/app"),
    ("dev", "Fix the failing date tests", "done", "set the time zone in the test setup; 48 tests pass"),
]
LESSON = "The date tests fail unless TZ=UTC is set; set it in the test setup."
STOP_WORDS = {"could", "that", "with", "from", "this", "the", "then", "into"}


def seed_history(ws: Path, store: Store) -> None:
    """Earlier finished work, as the crew leaves it: tasks, their lines in #agent-logs,
    and a lesson in shared memory."""
    write_files(ws, BASE_FILES)
    for owner, title, status, result in HISTORY:
        task = store.write(r.create_task, OWNER, title, owner=owner)
        store.write(r.set_task_status, OWNER, task.id, "active")
        store.write(r.set_task_status, OWNER, task.id, status, result)
        store.write(r.post_message, owner, "agent-logs", f"task {task.id} {status}: {title} → {result}",
                    task_id=task.id)
    store.write(r.write_memory, OWNER, LESSON, kind="reflection", scope="shared", tags=["tests"],
                importance=4, agent="dev")


def _content_words(text: str) -> set[str]:
    return {w for w in _words(text) if len(w) >= 4 and w not in STOP_WORDS}


def _earlier(store: Store, asked: str) -> list:
    return [t for t in store.read(queries.tasks) if t.title != asked and t.parent_id is None]


def _failed_task(prompt: str) -> Checker:
    def check(answer: str, _ws: Path, store: Store) -> Verdict:
        failed = [t for t in _earlier(store, prompt) if t.status == "failed"]
        if not failed:
            return wrong("no earlier task failed: the setup is broken")
        said = _words(answer)
        for t in failed:
            title = _content_words(t.title)
            why = _content_words(t.result or "") - title
            names_it = len(title & said) >= 2 or re.search(rf"(task\s*|#){t.id}\b", answer, re.I)
            if names_it and why & said:
                return ok(f"names task {t.id} ({t.title}) and why ({sorted(why & said)})")
        t = failed[0]
        return wrong(f"task {t.id} ({t.title!r}) failed because {t.result!r}")
    return check


def _photo_count(answer: str, _ws: Path, store: Store) -> Verdict:
    backup = next(t for t in store.read(queries.tasks) if "photo" in t.title.lower())
    truth = int(re.findall(r"\d+", backup.result or "")[0])
    return _near(numbers(answer), truth, 0, "files the backup copied")


def _who_rotated(prompt: str) -> Checker:
    def check(answer: str, _ws: Path, store: Store) -> Verdict:
        earlier = _earlier(store, prompt)
        owner = next(t.owner for t in earlier if "logs" in t.title.lower())
        said = _words(answer)
        others = {t.owner for t in earlier if t.owner} - {owner}
        if owner in said and not others & said:
            return ok(f"names {owner} alone")
        return wrong(f"{owner} rotated the logs; answer named {sorted(said & {owner, *others})}")
    return check


def _lesson(answer: str, _ws: Path, store: Store) -> Verdict:
    entry = store.read(queries.search_memory, "date tests")[0]
    keys = set(re.findall(r"\b[A-Z]{2,}\b", entry.content))  # the lesson's acronyms: TZ, UTC
    missing = {k for k in keys if k not in answer}
    return wrong(f"the lesson says {entry.content!r}; missing {sorted(missing)}") if missing else ok(
        f"names {sorted(keys)}")


def _done_count(prompt: str) -> Checker:
    def check(answer: str, _ws: Path, store: Store) -> Verdict:
        truth = sum(t.status == "done" for t in _earlier(store, prompt))
        found = [int(x) for x in numbers(answer) if x == int(x)]
        return ok(f"{truth} named") if found[:1] == [truth] else wrong(
            f"{truth} earlier tasks are done; answer's first figure {found[:1]}")
    return check


# --- the suite ---

P_FAILED = "Which earlier task failed, and why?"
P_ROTATED = "Which agent rotated the logs?"
P_DONE = "How many earlier tasks were completed successfully?"
P_LEAD_DISK = "Find out how full the disk is in percent and save just that figure in disk.txt."
P_LEAD_FILES = "Tell me how many files are in the workspace and how many CPU cores this machine has."
P_LEAD_ROWS = "Tell me how much of the memory is in use, in percent, and how many data rows cities.csv has."

SUITE: list[SuiteTask] = [
    # ops: the machine
    SuiteTask(name="disk-percent", agent="ops", prompt="How full is the disk? Give the percentage.",
              setup=files(), check=_disk_percent),
    SuiteTask(name="memory-percent", agent="ops",
              prompt="How much of the memory is in use? Give the percentage.",
              setup=files(), check=_memory_percent),
    SuiteTask(name="cpu-count", agent="ops", prompt="How many CPU cores does this machine have?",
              setup=files(), check=_cpu_count),
    SuiteTask(name="uptime", agent="ops", prompt="How long has this machine been up, in hours?",
              setup=files(), check=_uptime),
    SuiteTask(name="memory-total", agent="ops",
              prompt="How much memory does this machine have in total, in GiB?",
              setup=files(), check=_memory_total),
    SuiteTask(name="disk-free", agent="ops", prompt="How much free space is left on the disk, in GiB?",
              setup=files(), check=_disk_free),
    SuiteTask(name="top-memory", agent="ops", prompt="Which process uses the most memory?",
              setup=files(), check=_top_memory_process),
    # dev: files, changed exactly
    SuiteTask(name="create-notes", agent="dev", prompt="Create notes.txt containing hello",
              setup=files(), check=_file_is("notes.txt", "hello"), question=False),
    SuiteTask(name="create-todo", agent="dev",
              prompt="Create todo.md with exactly these two lines: '- buy milk' and '- call Bob'",
              setup=files(), check=_file_is("todo.md", "- buy milk\n- call Bob"), question=False),
    SuiteTask(name="edit-port", agent="dev", prompt="In settings.ini, change the port from 8080 to 9090.",
              setup=files({"settings.ini": SETTINGS}),
              check=_file_is("settings.ini", SETTINGS.replace("8080", "9090")), question=False),
    SuiteTask(name="append-changelog", agent="dev",
              prompt="Append the line '- fixed the login bug' to the end of CHANGELOG.md.",
              setup=files({"CHANGELOG.md": CHANGELOG}),
              check=_file_is("CHANGELOG.md", CHANGELOG + "- fixed the login bug\n"), question=False),
    SuiteTask(name="edit-json", agent="dev",
              prompt="In config.json, set retries to 5 and change nothing else.",
              setup=files({"config.json": CONFIG_JSON}),
              check=_json_is("config.json", {"name": "demo", "debug": True, "retries": 5}), question=False),
    SuiteTask(name="remove-line", agent="dev",
              prompt="Remove the DEBUG line from app.env; keep the other lines.",
              setup=files({"app.env": APP_ENV}), check=_file_is("app.env", "NAME=demo\nPORT=5000\n"),
              question=False),
    SuiteTask(name="fix-typo", agent="dev", prompt="Fix the typo 'teh' in guide.txt.",
              setup=files({"guide.txt": GUIDE}), check=_file_is("guide.txt", GUIDE.replace("teh", "the")),
              question=False),
    # a change asked of review, which has no tool that writes: made by the agent that can
    SuiteTask(name="typo-to-review", agent="review", prompt="Fix the typo 'teh' in guide.txt.",
              setup=files({"guide.txt": GUIDE}), check=_file_is("guide.txt", GUIDE.replace("teh", "the")),
              question=False),
    # dev: questions about the workspace (nothing may be written)
    SuiteTask(name="count-files", agent="dev", prompt="How many files are in the workspace?",
              setup=files(), check=_file_count),
    SuiteTask(name="sum-numbers", agent="dev", prompt="What is the sum of the numbers in numbers.txt?",
              setup=files({"numbers.txt": NUMBERS}), check=_sum_of_numbers),
    SuiteTask(name="count-rows", agent="dev",
              prompt="How many data rows does cities.csv have, not counting the header?",
              setup=files({"cities.csv": ROWS}), check=_row_count),
    SuiteTask(name="largest-file", agent="dev", prompt="Which file in the workspace is the largest?",
              setup=files({"cities.csv": ROWS}), check=_largest_file),
    SuiteTask(name="read-port", agent="dev", prompt="Which port is set in settings.ini?",
              setup=files({"settings.ini": SETTINGS}), check=_port_value),
    # review: a diff with a planted bug
    *[SuiteTask(name=f"diff-{kind}", agent="review",
                prompt="Review change.diff: which line has a bug, and what is wrong with it?",
                setup=_review_setup(bug), check=_review_check(bug)) for kind, bug in BUGS.items()],
    # lead: split the work, combine the results
    SuiteTask(name="disk-to-file", agent="lead", prompt=P_LEAD_DISK, setup=files(),
              check=_delegated(P_LEAD_DISK, 1, _disk_file), question=False),
    SuiteTask(name="files-and-cores", agent="lead", prompt=P_LEAD_FILES, setup=files(),
              check=_delegated(P_LEAD_FILES, 2, _both(_file_count, _cpu_count))),
    SuiteTask(name="memory-and-rows", agent="lead", prompt=P_LEAD_ROWS, setup=files({"cities.csv": ROWS}),
              check=_delegated(P_LEAD_ROWS, 2, _both(_memory_percent, _row_count))),
    # scribe: what happened
    SuiteTask(name="what-failed", agent="scribe", prompt=P_FAILED, setup=seed_history,
              check=_failed_task(P_FAILED)),
    SuiteTask(name="backup-count", agent="scribe", prompt="How many files did the photo backup copy?",
              setup=seed_history, check=_photo_count),
    SuiteTask(name="who-rotated", agent="scribe", prompt=P_ROTATED, setup=seed_history,
              check=_who_rotated(P_ROTATED)),
    SuiteTask(name="date-lesson", agent="scribe", prompt="What did we learn about the failing date tests?",
              setup=seed_history, check=_lesson),
    SuiteTask(name="done-count", agent="scribe",
              prompt=P_DONE, setup=seed_history, check=_done_count(P_DONE)),
]


def select(pattern: str | None) -> list[SuiteTask]:
    """The tasks whose `agent/name` matches the regular expression (all when None)."""
    if not pattern:
        return list(SUITE)
    found = re.compile(pattern, re.I)
    return [t for t in SUITE if found.search(f"{t.agent}/{t.name}")]
