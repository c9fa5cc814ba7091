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
import importlib.metadata
import os
import stat
from pathlib import Path
from typing import BinaryIO

import msgspec

import agents
import app
from agents.config import InferenceConfig
from agents.errors import InvalidArgument
from agents.models.install import sha256_of
from app.bench.suite_result import TaskResult

KIND = "agentdeck suite journal"
VERSION = 1
HEADER_MAX = 4096  # bytes: a header line is about 400; a longer first line is not a journal


class Stamp(msgspec.Struct):
    """What any journal version's header starts with."""

    kind: str = ""
    version: int = 0


class Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str
    version: int
    source: str  # source_digest(): the code that ran the crew and judged it
    model: str  # the file's name, for a person reading the journal
    model_sha256: str
    inference: str  # sha256 of the engine settings (the model path aside)


class Entry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    round: int  # from 0
    harness: str  # "default" or the lever turned off
    task: str  # agent/name
    result: TaskResult


def source_digest() -> str:
    """The code that runs the crew and judges it: every regular file of both packages (the
    prompts and rules in default_crew.toml as much as the .py files), by path and content,
    and the llama.cpp bindings' version. Conservative on purpose: a comment edited is
    another digest too, which is why a long ablation runs from a checkout of one commit."""
    digest = hashlib.sha256()
    try:
        bindings = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        bindings = "none"
    digest.update(f"llama_cpp_python {bindings}\0".encode())
    for package in (agents, app):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if ("__pycache__" in relative.parts or any(p.startswith(".") for p in relative.parts)
                    or path.is_symlink() or not path.is_file()):  # an editor's lock link, a stray dir
                continue
            digest.update(f"{package.__name__}/{relative.as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def header_for(model: Path, inference: InferenceConfig) -> Header:
    """What the runs about to be made depend on (reads the whole model file: about 2 s for 1 GiB)."""
    settings = msgspec.json.encode(msgspec.structs.replace(inference, model=""))
    return Header(kind=KIND, version=VERSION, source=source_digest(), model=model.name,
                  model_sha256=sha256_of(model), inference=hashlib.sha256(settings).hexdigest())


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
        """Appends one line and syncs it (blocking: call it off the event loop). A failed
        write (a full disk) is a one-line InvalidArgument: the runs before it are kept."""
        line = msgspec.json.encode(Entry(round=round_, harness=harness, task=task, result=result)) + b"\n"
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:
            raise InvalidArgument(f"--journal {self.path}: {err.strerror or err}; the runs before this one "
                                  "are kept: run again with this file to resume") from None
        self._entries[(round_, harness, task)] = result


def open_journal(path: Path, header: Header) -> Journal:
    """The journal at `path` for runs described by `header`, locked: a new one (the file
    made, the header written), or the existing one, its entries read and a line torn by a
    kill dropped. Anything else is a one-line InvalidArgument naming the problem. Blocking:
    call it off the event loop."""
    where = f"--journal {path}"
    try:
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):  # a directory, a FIFO, a terminal
            raise InvalidArgument(f"{where}: not a regular file")
        file = path.open("a+b")  # made if missing; every write goes to the end
    except OSError as err:
        raise InvalidArgument(f"{where}: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidArgument(f"{where}: in use by another run (wait for it, or give another "
                                  "file)") from None
        file.seek(0)
        first = file.readline(HEADER_MAX)
        ours = msgspec.json.encode(header) + b"\n"
        if not first.endswith(b"\n") and ours.startswith(first):  # new, or a header cut short
            file.truncate(0)
            file.write(ours)
            file.flush()
            os.fsync(file.fileno())
            return Journal(path, file, header, {})
        _check_header(where, first, header)
        rest = file.read()
        entries, torn = _read_entries(where, rest)
        if torn:  # what is kept ends with a newline before anything is appended
            file.truncate(len(first) + len(rest) - torn)
        return Journal(path, file, header, entries)
    except OSError as err:
        file.close()
        raise InvalidArgument(f"{where}: {err.strerror or err}") from None
    except BaseException:
        file.close()
        raise


def _check_header(where: str, first: bytes, header: Header) -> None:
    try:
        stamp = msgspec.json.decode(first, type=Stamp)
    except msgspec.DecodeError:
        stamp = Stamp()
    if stamp.kind != KIND or not first.endswith(b"\n"):
        raise InvalidArgument(f"{where}: not a suite journal (give a new file to start one)")
    if stamp.version != VERSION:
        raise InvalidArgument(f"{where}: journal version {stamp.version}; this agentdeck reads {VERSION}")
    try:
        found = msgspec.json.decode(first, type=Header)
    except msgspec.DecodeError:
        raise InvalidArgument(f"{where}: its header (line 1) is damaged; give a new file") from None
    model = f"another model file ({found.model})"
    for what, theirs, ours in (("other code", found.source, header.source),
                               (model, found.model_sha256, header.model_sha256),
                               ("other engine settings", found.inference, header.inference)):
        if theirs != ours:
            raise InvalidArgument(f"{where}: its runs were made with {what} (sha256 {theirs[:12]}, here "
                                  f"{ours[:12]}); runs made otherwise are not comparable: resume with what "
                                  "made them, or give a new file")


def _read_entries(where: str, rest: bytes) -> tuple[dict[tuple[int, str, str], TaskResult], int]:
    """The entries after the header, and how many bytes at the end a kill left torn."""
    lines = rest.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or a line a kill cut short
    entries: dict[tuple[int, str, str], TaskResult] = {}
    for number, text in enumerate(lines, start=2):
        try:
            entry = msgspec.json.decode(text, type=Entry)
        except msgspec.DecodeError:
            raise InvalidArgument(f"{where}: line {number} is not a task run; the file was changed "
                                  "by hand or by something else") from None
        entries[(entry.round, entry.harness, entry.task)] = entry.result
    return entries, len(torn)
