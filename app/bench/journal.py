"""`bench crew --suite --journal FILE`: the suite's task runs, kept as they finish, so a
run that was stopped (Ctrl-C, SIGTERM, the end of a session) resumes where it stopped.

Why: one model's per-lever ablation takes hours of a 2-core machine (Qwen-1.5B: about
180 reruns a round at about 30 s each), longer than one sitting. The journal is JSON
lines: a header saying what produced the runs, then one line per finished task run. A
rerun with the same file reuses every run it finds (by round, harness and task) and runs
only the rest; more rounds or more levers may be added later. Runs are comparable only
when made by the same code, on the same model file and engine settings, so a journal
written otherwise is refused in one line rather than mixed in.

Each line is appended whole and synced before the next task starts: a process killed
mid-write loses at most that line, which the next open drops. A run holds the file
locked, so a second run on the same journal is refused rather than duplicating work."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import msgspec

import agents
import app
from agents.config import InferenceConfig
from agents.errors import InvalidArgument
from app.bench.suite_result import TaskResult

KIND = "agentdeck suite journal"
VERSION = 1


class Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str
    version: int
    source: str  # sha256 over the agents and app packages' Python files
    model: str  # the file's name, for a person reading the journal
    model_sha256: str
    inference: str  # sha256 of the engine settings (the model path aside)


class Entry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    round: int  # from 0
    harness: str  # "default" or the lever turned off
    task: str  # agent/name
    result: TaskResult


def source_digest() -> str:
    """The code that runs the crew and judges it: every .py file of both packages, by
    path and content, so an edited harness, prompt or checker gives another digest."""
    digest = hashlib.sha256()
    for package in (agents, app):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def header_for(model: Path, inference: InferenceConfig) -> Header:
    """What the runs about to be made depend on (reads the whole model file: about 2 s for 1 GiB)."""
    settings = msgspec.json.encode(msgspec.structs.replace(inference, model=""))
    return Header(kind=KIND, version=VERSION, source=source_digest(), model=model.name,
                  model_sha256=file_sha256(model), inference=hashlib.sha256(settings).hexdigest())


class Journal:
    """An open, locked journal: the runs it holds, and an append for each new one. Close it
    (or use it as a context manager) to let another run have it."""

    def __init__(self, path: Path, file: BinaryIO, header: Header,
                 entries: dict[tuple[int, str, str], TaskResult]) -> None:
        self.path = path
        self.header = header
        self._file = file
        self._entries = entries

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()  # the lock goes with the descriptor

    @property
    def reused(self) -> int:
        return len(self._entries)

    def get(self, round_: int, harness: str, task: str) -> TaskResult | None:
        return self._entries.get((round_, harness, task))

    def add(self, round_: int, harness: str, task: str, result: TaskResult) -> None:
        """Appends one line and syncs it (blocking: call it off the event loop)."""
        line = msgspec.json.encode(Entry(round=round_, harness=harness, task=task, result=result)) + b"\n"
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._entries[(round_, harness, task)] = result


def open_journal(path: Path, header: Header) -> Journal:
    """The journal at `path` for runs described by `header`, locked: a new one (the file
    made, the header written), or the existing one, its entries read and a line torn by a
    kill dropped. Anything else is a one-line InvalidArgument naming the problem."""
    where = f"--journal {path}"
    try:
        file = path.open("a+b")  # made if missing; every write goes to the end
    except OSError as err:
        raise InvalidArgument(f"{where}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidArgument(f"{where}: in use by another run (wait for it, or give another "
                                  "file)") from None
        file.seek(0)
        raw = file.read()
        if not raw:
            file.write(msgspec.json.encode(header) + b"\n")
            file.flush()
            os.fsync(file.fileno())
            return Journal(path, file, header, {})
        entries, torn = _read(where, raw, header)
        if torn:  # what is kept ends with a newline before anything is appended
            file.truncate(len(raw) - torn)
        return Journal(path, file, header, entries)
    except OSError as err:
        file.close()
        raise InvalidArgument(f"{where}: {err.strerror}") from None
    except BaseException:
        file.close()
        raise


def _read(where: str, raw: bytes, header: Header) -> tuple[dict[tuple[int, str, str], TaskResult], int]:
    """The entries of a journal's bytes, and how many bytes at its end a kill left torn."""
    lines = raw.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or a line a kill cut short
    try:
        found = msgspec.json.decode(lines[0], type=Header) if lines else None
    except msgspec.DecodeError:
        found = None
    if found is None or found.kind != KIND:
        raise InvalidArgument(f"{where}: not a suite journal (give a new file to start one)")
    if found.version != VERSION:
        raise InvalidArgument(f"{where}: journal version {found.version}; this agentdeck reads {VERSION}")
    model = f"another model file ({found.model})"
    for what, theirs, ours in (("other code", found.source, header.source),
                               (model, found.model_sha256, header.model_sha256),
                               ("other engine settings", found.inference, header.inference)):
        if theirs != ours:
            raise InvalidArgument(f"{where}: its runs were made with {what} (sha256 {theirs[:12]}, here "
                                  f"{ours[:12]}); runs made otherwise are not comparable: resume with what "
                                  "made them, or give a new file")
    entries: dict[tuple[int, str, str], TaskResult] = {}
    for number, text in enumerate(lines[1:], start=2):
        try:
            entry = msgspec.json.decode(text, type=Entry)
        except msgspec.DecodeError:
            raise InvalidArgument(f"{where}: line {number} is not a task run; the file was changed "
                                  "by hand or by something else") from None
        entries[(entry.round, entry.harness, entry.task)] = entry.result
    return entries, len(torn)
