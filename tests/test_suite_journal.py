"""`bench crew --suite --journal FILE`: each task run kept as it finishes, so a stopped run
resumes. The file itself (a torn last line dropped, a changed one or one made by other
code, model or settings refused in one line); the suite loop reusing what the journal
holds and making only the rest; and the real CLI with the real model, stopped by SIGTERM
after its first run and resumed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from helpers import REPO, agentdeck_cmd, one_line_error, run, subprocess_env, time_left
from rich.console import Console

from agents.config import InferenceConfig, default_config
from agents.crew.harness import ABLATIONS, DEFAULT, Harness
from agents.errors import InvalidArgument
from app.bench import journal as jr
from app.bench import suite
from app.bench import suite_tasks as st
from app.bench.suite import TaskResult, run_suite

HEADER = jr.Header(kind=jr.KIND, version=jr.VERSION, source="a" * 64, model="m.gguf",
                   model_sha256="b" * 64, inference="c" * 64)


def _result(name: str, correct: bool = True) -> TaskResult:
    return TaskResult(name=name, agent="ops", prompt="p", status="done", done=True, correct=correct,
                      reason="r", answer=f"answer of {name}", wall_s=1.5, acted=["evidence"])


def test_a_new_journal_keeps_each_run_and_a_reopened_one_gives_them_back(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with jr.open_journal(path, HEADER) as book:
        assert book.reused == 0
        book.add(0, "default", "ops/a", _result("a"))
        book.add(0, "no calculator", "ops/a", _result("a", correct=False))
    with jr.open_journal(path, HEADER) as again:
        assert again.reused == 2
        assert again.get(0, "default", "ops/a") == _result("a")
        assert again.get(0, "no calculator", "ops/a") == _result("a", correct=False)
        assert again.get(1, "default", "ops/a") is None  # another round: not there
    assert len(path.read_bytes().splitlines()) == 3  # the header and one line per run


def test_a_line_torn_by_a_kill_is_dropped_and_the_next_run_is_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with jr.open_journal(path, HEADER) as book:
        book.add(0, "default", "ops/a", _result("a"))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"round":0,"harness":"default","task":"ops/b","res')  # killed mid-write
    with jr.open_journal(path, HEADER) as book:
        assert book.reused == 1 and book.get(0, "default", "ops/b") is None
        assert path.read_bytes() == whole  # cut back to the last whole line
        book.add(0, "default", "ops/b", _result("b"))
    with jr.open_journal(path, HEADER) as book:
        assert book.get(0, "default", "ops/b") == _result("b")


def test_a_journal_in_use_by_a_run_is_refused_until_that_run_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with jr.open_journal(path, HEADER) as book:
        book.add(0, "default", "ops/a", _result("a"))
        with pytest.raises(InvalidArgument) as refused:
            jr.open_journal(path, HEADER)
        assert str(refused.value) == f"--journal {path}: in use by another run (wait for it, or give another file)"
        book.add(0, "default", "ops/b", _result("b"))  # the holder goes on
    with jr.open_journal(path, HEADER) as book:
        assert book.reused == 2


@pytest.mark.parametrize(("field", "said"), [("source", "other code"),
                                              ("model_sha256", "another model file (m.gguf)"),
                                              ("inference", "other engine settings")])
def test_a_journal_written_otherwise_is_refused_in_one_line_and_left_alone(
        tmp_path: Path, field: str, said: str) -> None:
    path = tmp_path / "j.jsonl"
    with jr.open_journal(path, HEADER) as book:
        book.add(0, "default", "ops/a", _result("a"))
    before = path.read_bytes()
    other = msgspec.structs.replace(HEADER, **{field: "d" * 64})
    with pytest.raises(InvalidArgument) as refused:
        jr.open_journal(path, other)
    assert str(refused.value) == (f"--journal {path}: its runs were made with {said} (sha256 "
                                  f"{getattr(HEADER, field)[:12]}, here dddddddddddd); runs made otherwise are "
                                  "not comparable: resume with what made them, or give a new file")
    assert path.read_bytes() == before


def test_a_changed_line_a_foreign_file_and_a_directory_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with jr.open_journal(path, HEADER) as book:
        book.add(0, "default", "ops/a", _result("a"))
    path.write_bytes(path.read_bytes() + b'{"round": "zero"}\n')
    with pytest.raises(InvalidArgument, match=r"line 3 is not a task run; the file was changed by hand"):
        jr.open_journal(path, HEADER)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(InvalidArgument, match=r"not a suite journal \(give a new file to start one\)"):
        jr.open_journal(notes, HEADER)
    assert notes.read_text() == "my notes\n"
    with pytest.raises(InvalidArgument, match=r"^--journal .*: not a regular file$"):
        jr.open_journal(tmp_path, HEADER)


def test_a_header_cut_short_by_a_kill_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(msgspec.json.encode(HEADER)[:40])  # killed while the new file's header was written
    with jr.open_journal(path, HEADER) as book:
        assert book.reused == 0
        book.add(0, "default", "ops/a", _result("a"))
    with jr.open_journal(path, HEADER) as book:
        assert book.get(0, "default", "ops/a") == _result("a")


def test_a_later_journal_version_and_a_fifo_are_refused_in_one_line(tmp_path: Path) -> None:
    later = tmp_path / "later.jsonl"
    later.write_bytes(b'{"kind": "agentdeck suite journal", "version": 2, "new_field": 1}\n')
    with pytest.raises(InvalidArgument, match=r": journal version 2; this agentdeck reads 1$"):
        jr.open_journal(later, HEADER)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument, match=r"^--journal .*/fifo: not a regular file$"):
        jr.open_journal(fifo, HEADER)


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from agents.errors import InvalidArgument
from app.bench import journal as jr
from test_suite_journal import HEADER, _result
book = jr.open_journal(Path(sys.argv[1]), HEADER)
book.add(0, "default", "ops/a", _result("a"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (Path(sys.argv[1]).stat().st_size + 10,) * 2)
try:
    book.add(0, "default", "ops/b", _result("b"))
except InvalidArgument as err:
    print(err)
"""


@pytest.mark.timeout(60)
def test_a_write_that_fails_mid_run_is_one_line_and_the_runs_before_it_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True,
                          timeout=time_left(), env=subprocess_env(tmp_path / "home",
                                                                  PYTHONPATH=f"{REPO}:{REPO / 'tests'}"))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == (f"--journal {path}: File too large; the runs before this one are kept: run again "
                           "with this file to resume\n")
    with jr.open_journal(path, HEADER) as book:  # what was torn is dropped; the first run is there
        assert book.reused == 1 and book.get(0, "default", "ops/a") == _result("a")


def test_the_header_names_the_code_the_model_file_and_the_settings(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    header = jr.header_for(model, InferenceConfig())
    assert header.source == jr.source_digest() and len(header.source) == 64
    assert header.model == "m.gguf" and header.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    model.write_bytes(b"GGUF" + bytes(99) + b"\1")
    assert jr.header_for(model, InferenceConfig()).model_sha256 != header.model_sha256
    assert jr.header_for(model, InferenceConfig(seed=1)).inference != header.inference
    # The model's path is not a setting: the same file elsewhere resumes.
    assert jr.header_for(model, InferenceConfig(model="/elsewhere/m.gguf")).inference == header.inference


@pytest.mark.timeout(60)
async def test_a_resumed_suite_makes_only_the_runs_its_journal_lacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[int, str, str]] = []
    acted = {"disk-percent": ["calculator", "evidence"], "memory-percent": []}  # no lever acted in it

    async def fake_run_task(task: st.SuiteTask, where: Path, backend: object, harness: Harness,
                            inference: InferenceConfig) -> TaskResult:
        name = next(n for n, h in {"default": DEFAULT, **ABLATIONS}.items() if h == harness)
        ran.append((int(where.name.split("-")[0]), name, task.name))
        return TaskResult(name=task.name, agent=task.agent, prompt=task.prompt, status="done", done=True,
                          correct=harness == DEFAULT, reason="", answer=f"run {len(ran)}", wall_s=0.0,
                          acted=acted[task.name])

    monkeypatch.setattr(suite, "run_task", fake_run_task)
    monkeypatch.setattr(suite, "build_backend", lambda *a, **k: None)
    path = tmp_path / "j.jsonl"
    common = {"pattern": "ops/(disk|memory)-percent", "where_acted": True, "journal": path}
    said = io.StringIO()
    first = await run_suite(default_config(), None, Console(file=said, width=300), ablate=["no evidence rule"],
                            rounds=1, **common)
    assert "journal: 0 earlier task runs reused" in said.getvalue()
    assert ran == [(0, "default", "disk-percent"), (0, "default", "memory-percent"),
                   (0, "no evidence rule", "disk-percent")]
    assert len(path.read_bytes().splitlines()) == 1 + 3  # carried results are not runs: not kept
    ran.clear()
    # Later: a second round and one more lever. Round 0's runs come from the journal.
    said = io.StringIO()
    second = await run_suite(default_config(), None, Console(file=said, width=300),
                             ablate=["no evidence rule", "no calculator"], rounds=2, **common)
    assert "journal: 3 earlier task runs reused" in said.getvalue()
    assert sorted(ran) == sorted([(0, "no calculator", "disk-percent"), (1, "default", "disk-percent"),
                                  (1, "default", "memory-percent"), (1, "no evidence rule", "disk-percent"),
                                  (1, "no calculator", "disk-percent")])
    by_first, by_second = ({f.harness: f for f in every} for every in (first, second))
    for harness in ("default", "no evidence rule"):  # the very runs kept the first time
        assert by_second[harness].results[0] == by_first[harness].results[0]
    # memory-percent under a lever off: the default's result of the same round, carried over
    assert [(x.answer, x.carried) for x in (found[1] for found in by_second["no calculator"].results)] == \
        [(by_second["default"].results[r][1].answer, True) for r in (0, 1)]
    assert len(path.read_bytes().splitlines()) == 1 + 3 + 5


# --- the real CLI, the real model, a real signal ---

@pytest.mark.timeout(420)
def test_a_suite_stopped_by_sigterm_resumes_from_its_journal_with_the_real_model(tmp_path: Path) -> None:
    home, path, scratch = tmp_path / "home", tmp_path / "suite.jsonl", tmp_path / "tmp"
    scratch.mkdir()  # the suite's temporary homes go here: none may be left behind
    args = ["bench", "crew", "--suite", "--json", "--tasks", "ops/(disk-percent|cpu-count)", "--journal", str(path)]
    first = subprocess.Popen(agentdeck_cmd(*args), env=subprocess_env(home, TMPDIR=str(scratch)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + (time_left() or 300) / 2
        while not (path.exists() and len(path.read_bytes().splitlines()) >= 2):  # the first run is kept
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "no task run was journaled in time"
            time.sleep(0.05)
        assert list(scratch.glob("agentdeck-suite-*"))  # the next task's home is there
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == -signal.SIGTERM  # ended as SIGTERM ends a process
    finally:
        first.kill()
    assert not list(scratch.glob("agentdeck-suite-*"))  # but its temporary homes removed first
    kept = [json.loads(x) for x in path.read_bytes().splitlines()[1:]]
    assert [(x["round"], x["harness"], x["task"]) for x in kept] == [(0, "default", "ops/disk-percent")]

    second = run(home, *args, TMPDIR=str(scratch))
    assert second.returncode == 0, second.stderr
    assert not list(scratch.glob("agentdeck-suite-*"))
    assert "journal: 1 earlier task run reused" in second.stderr
    assert "ops/cpu-count (" in second.stderr  # a line per new run: cpu-count's
    assert "ops/disk-percent (" not in second.stderr  # and none for disk-percent: not run again
    (figures,) = json.loads(second.stdout)
    results = figures["results"][0]
    assert [x["name"] for x in results] == ["disk-percent", "cpu-count"]
    assert results[0] == kept[0]["result"]  # the journaled run itself, answer and time
    assert len(path.read_bytes().splitlines()) == 3  # cpu-count's run was added


@pytest.mark.timeout(60)
def test_suite_options_without_suite_are_refused_in_one_line(tmp_path: Path) -> None:
    done = run(tmp_path / "home", "bench", "crew", "--journal", str(tmp_path / "j"), "--tasks", "ops/")
    assert done.returncode != 0
    assert one_line_error(done) == "agentdeck: --tasks, --journal only with --suite"
    assert not (tmp_path / "j").exists()


@pytest.mark.timeout(60)
def test_a_file_that_is_not_a_journal_is_refused_in_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a journal\n")
    done = run(tmp_path / "home", "bench", "crew", "--suite", "--journal", str(notes))
    assert done.returncode != 0
    assert one_line_error(done) == (f"agentdeck: --journal {notes}: not a suite journal (give a new file "
                                    "to start one)")
    assert notes.read_text() == "not a journal\n"
