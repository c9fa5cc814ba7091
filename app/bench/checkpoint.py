"""`agentdeck bench checkpoint`: what a checkpoint costs, in time and disk, on trees of 1k,
20k and 100k files, beside the tool call it records.

Each tree is generated in a temporary directory (nested folders of small text files, every
thousandth one 256 KiB) with an agentdeck home beside it holding a real store. The first
snapshot of a tree is timed on its own (cold: git hashes every file once). Then each round,
for each tree (in an order rotated by one each round), does what the gate does around a
writing tool call: `Checkpointer.before`, the call, `Checkpointer.after` with a real
AgentStore on a real tool call row (so the diff and the checkpoint row are in the figure).
The "call" changes four files: writes a new one, edits one, deletes one, and runs
`sh -c 'sed -i …'` as run_shell would; it is timed on its own, and the figure is the
checkpoint's time over the call's. Disk: the shadow repository's size (du) before and after
each round, and at the end beside the tree's own. Figures, not assertions — except that each
round's checkpoint must list exactly the four files the call changed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import msgspec
from rich.console import Console

from agents.checkpoints.recorder import Checkpointer
from agents.checkpoints.shadow import ShadowRepo
from agents.config import CheckpointConfig
from agents.store import AsyncStore
from agents.store import reducers as r
from agents.tools.base import AgentStore
from app.args import positive_int
from app.bench import harness
from app.context import Context
from app.render import print_json

HELP = "checkpoints: time and disk per checkpoint on trees of 1k-100k files, vs the tool call's own time"

AGENT = "dev"
MIN_FILES = 10  # the call needs files to edit and delete, distinct from each other
MAX_FILES = 200_000  # beyond this the tree takes minutes to write, and 10000000 is a typo
PER_DIR = 100  # files per folder; folders nest two deep
BIG_EVERY = 1000  # every thousandth file is a big one
BIG_BYTES = 256 * 1024
_TEXT = "".join(f"line {n}: the quick brown fox jumps over the lazy dog, {n * 7919 % 10007}\n"
                for n in range(4000))


def tree_sizes(text: str) -> list[int]:
    """--files: a comma-separated list of tree sizes, each MIN_FILES..MAX_FILES."""
    sizes: list[int] = []
    for part in text.split(","):
        value = positive_int(part.strip())
        if not MIN_FILES <= value <= MAX_FILES:
            raise argparse.ArgumentTypeError(f"a tree has {MIN_FILES}..{MAX_FILES} files, got {value}")
        if value not in sizes:
            sizes.append(value)
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=tree_sizes, default=tree_sizes("1000,20000,100000"), metavar="N,N,...",
                   help="tree sizes in files (default 1000,20000,100000)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary trees and shadow repositories (their folder is printed)")
    harness.add_common(p, rounds=5, rounds_help="tool calls per tree, interleaved across trees")


class Round(msgspec.Struct, kw_only=True):
    before_ms: float
    after_ms: float  # the after-snapshot, the diff and the checkpoint row
    call_ms: float  # the whole fake call: write, edit, delete, sed
    shell_ms: float  # the sed subprocess alone (what a run_shell call costs at least)
    ratio: float  # (before + after) / call
    growth_bytes: int  # the shadow repository's du, after the round minus before it
    changed: dict[str, str]  # path -> A/M/D: what the call did
    recorded: dict[str, str]  # what the checkpoint lists
    seen: bool  # recorded == changed


class Tree(msgspec.Struct, kw_only=True):
    files: int
    tree_bytes: int  # the files' sizes
    tree_disk_bytes: int  # du of the tree
    generate_s: float
    cold_ms: float  # the first snapshot: every file hashed
    cold_disk_bytes: int  # du of the shadow repository after it
    unchanged_ms: float  # a warm after-snapshot and diff of an unchanged tree
    checkpoint_ms: harness.Stat  # before + after
    before_ms: harness.Stat
    after_ms: harness.Stat
    call_ms: harness.Stat
    shell_ms: harness.Stat
    ratio: harness.Stat
    growth_bytes: harness.Stat
    shadow_disk_bytes: int  # du of the shadow repository at the end
    shadow_over_tree: float  # shadow_disk_bytes / tree_disk_bytes
    all_seen: bool
    rounds: list[Round]


class Report(msgspec.Struct, kw_only=True):
    git: str
    rounds: int
    trees: list[Tree]
    kept: str | None = None


def disk_usage(path: Path) -> int:
    """What `du -s` counts, in bytes: allocated blocks of everything under `path`."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                pass  # gone meanwhile
    return total


def generate(root: Path, count: int) -> tuple[list[str], int]:
    """`count` files under `root`, two folders deep, each distinct (git stores identical
    files once, which would flatter the disk figures); the small files' paths and the bytes
    written."""
    small: list[str] = []
    total = 0
    made: set[str] = set()
    for i in range(count):
        folder = f"d{i // (PER_DIR * PER_DIR):02d}/d{i // PER_DIR % PER_DIR:02d}"
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        name = f"{folder}/f{i:06d}.txt"
        start = i * 131 % 200_000
        if i % BIG_EVERY == BIG_EVERY - 1:
            body = (_TEXT * (BIG_BYTES // len(_TEXT) + 1))[start % len(_TEXT):][:BIG_BYTES]
        else:
            small.append(name)
            body = _TEXT[start % (len(_TEXT) - 2000):][:200 + i * 7919 % 1800]
        data = f"# {name}\n{body}\n".encode()
        fd = os.open(root / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        total += len(data)
    return small, total


class Bed:
    """One tree and what its rounds need: the files the call may touch, the shadow's size."""

    def __init__(self, workspace: Path, small: list[str], repo: ShadowRepo) -> None:
        self.workspace = workspace
        self.small = small[:-1]  # the last one is deleted in round one
        self.doomed = small[-1]  # the next file the call deletes
        self.repo = repo
        self.disk = 0
        self.rounds: list[Round] = []


def fake_call(bed: Bed, round_: int) -> tuple[dict[str, str], float, float]:
    """A writing tool call: a new file, an edit, a deletion and a shell command. What it
    changed (path -> A/M/D), its time and its shell command's time, in ms."""
    ws = bed.workspace
    new = f"d00/new-{round_:04d}.txt"
    edited = bed.small[2 * round_ % len(bed.small)]
    sedded = bed.small[(2 * round_ + 1) % len(bed.small)]
    deleted = bed.doomed
    started = time.perf_counter()
    (ws / new).write_text(f"written by round {round_}\n")
    path = ws / edited
    path.write_text(path.read_text().replace("\n", f" (edited in round {round_})\n", 1))
    (ws / deleted).unlink()
    shell = time.perf_counter()
    subprocess.run(["sh", "-c", f"sed -i '1s/^/# sed round {round_}: /' {sedded}"], cwd=ws, check=True)
    ended = time.perf_counter()
    bed.doomed = new  # the next round deletes this round's new file
    return ({new: "A", edited: "M", sedded: "M", deleted: "D"}, (ended - started) * 1000,
            (ended - shell) * 1000)


async def one_round(bed: Bed, round_: int, cp: Checkpointer, store: AgentStore) -> Round:
    call = await store.write(r.start_tool_call, "run_shell", {"bench": round_})
    started = time.perf_counter()
    before = await cp.before(bed.workspace)
    t_before = time.perf_counter()
    changed, call_ms, shell_ms = fake_call(bed, round_)
    t_call = time.perf_counter()
    checkpoint = await cp.after(before, store, call.id)
    ended = time.perf_counter()
    await store.write(r.finish_tool_call, call.id, "ok", "")
    if before.snapshot is None or (checkpoint is not None and checkpoint.status == "failed"):
        raise RuntimeError(f"a checkpoint failed: {before.error or (checkpoint.note if checkpoint else '')}")
    recorded = {f.path: f.status for f in checkpoint.files} if checkpoint is not None else {}
    disk = disk_usage(bed.repo.git_dir)
    growth, bed.disk = disk - bed.disk, disk
    before_ms, after_ms = (t_before - started) * 1000, (ended - t_call) * 1000
    return Round(before_ms=round(before_ms, 2), after_ms=round(after_ms, 2), call_ms=round(call_ms, 3),
                 shell_ms=round(shell_ms, 3), ratio=round((before_ms + after_ms) / call_ms, 2),
                 growth_bytes=growth, changed=changed, recorded=recorded, seen=recorded == changed)


async def measure(tmp: Path, sizes: list[int], rounds: int, err: Console) -> list[Tree]:
    home = tmp / "home"
    home.mkdir()
    cp = Checkpointer(home, CheckpointConfig())
    store = AsyncStore(home / "agentdeck.db", [AGENT])
    await store.open()
    try:
        agent = AgentStore(store, AGENT)
        beds: dict[int, Bed] = {}
        setup: dict[int, Setup] = {}
        for n in sizes:
            harness.say(err, f"{n} files: writing the tree")
            ws = tmp / f"tree-{n}"
            ws.mkdir()
            started = time.perf_counter()
            small, written = generate(ws, n)
            generated = time.perf_counter() - started
            bed = beds[n] = Bed(ws, small, cp.repo(ws))
            harness.say(err, f"{n} files: the first snapshot")
            setup[n] = await cold_start(bed, cp, agent, generated, written)
        for round_ in range(rounds):
            for n in harness.order(sizes, round_):
                harness.say(err, f"round {round_ + 1}/{rounds}: {n} files")
                beds[n].rounds.append(await one_round(beds[n], round_, cp, agent))
    finally:
        await store.close()
    return [_tree(n, beds[n], setup[n]) for n in sizes]


class Setup(msgspec.Struct, kw_only=True):
    generate_s: float
    tree_bytes: int
    tree_disk_bytes: int
    cold_ms: float
    cold_disk_bytes: int
    unchanged_ms: float


async def cold_start(bed: Bed, cp: Checkpointer, agent: AgentStore, generated: float,
                     written: int) -> Setup:
    """The first snapshot of a fresh tree (the shadow repository created, every file hashed),
    then an after-snapshot of the unchanged tree (warm: git's stat cache answers)."""
    call = await agent.write(r.start_tool_call, "run_shell", {"bench": "cold"})
    started = time.perf_counter()
    cold = await cp.before(bed.workspace)
    t_cold = time.perf_counter()
    result = await cp.after(cold, agent, call.id)
    ended = time.perf_counter()
    await agent.write(r.finish_tool_call, call.id, "ok", "")
    if cold.snapshot is None:
        raise RuntimeError(f"the first snapshot failed: {cold.error}")
    if result is not None:
        raise RuntimeError(f"an unchanged tree was recorded as changed: {[f.path for f in result.files[:3]]}")
    bed.disk = disk_usage(bed.repo.git_dir)
    return Setup(generate_s=generated, tree_bytes=written, tree_disk_bytes=disk_usage(bed.workspace),
                 cold_ms=(t_cold - started) * 1000, cold_disk_bytes=bed.disk,
                 unchanged_ms=(ended - t_cold) * 1000)


def _tree(n: int, bed: Bed, setup: Setup) -> Tree:
    rs = bed.rounds
    return Tree(files=n, tree_bytes=setup.tree_bytes, tree_disk_bytes=setup.tree_disk_bytes,
                generate_s=round(setup.generate_s, 2), cold_ms=round(setup.cold_ms, 1),
                cold_disk_bytes=setup.cold_disk_bytes, unchanged_ms=round(setup.unchanged_ms, 1),
                checkpoint_ms=harness.stat([x.before_ms + x.after_ms for x in rs], 1),
                before_ms=harness.stat([x.before_ms for x in rs], 1),
                after_ms=harness.stat([x.after_ms for x in rs], 1),
                call_ms=harness.stat([x.call_ms for x in rs], 2),
                shell_ms=harness.stat([x.shell_ms for x in rs], 2),
                ratio=harness.stat([x.ratio for x in rs], 1),
                growth_bytes=harness.stat([float(x.growth_bytes) for x in rs], 0),
                shadow_disk_bytes=bed.disk,
                shadow_over_tree=round(bed.disk / max(setup.tree_disk_bytes, 1), 2),
                all_seen=all(x.seen for x in rs), rounds=rs)


def git_version() -> str:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.strip().removeprefix("git version ") or "unknown"


def run(_ctx: Context, args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    tmp = Path(tempfile.mkdtemp(prefix="agentdeck-bench-checkpoint-"))
    try:
        trees = asyncio.run(measure(tmp, args.files, args.rounds, err))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report = Report(git=git_version(), rounds=args.rounds, trees=trees, kept=str(tmp) if args.keep else None)
    missed = [f"{t.files} files, round {i + 1}" for t in trees for i, x in enumerate(t.rounds) if not x.seen]
    if args.json:
        print_json(report)
    else:
        print_table(report)
    if missed:
        err.print(f"a checkpoint did not list exactly the files the call changed: {'; '.join(missed)}",
                  markup=False, highlight=False)
        return 1
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _range(s: harness.Stat, fmt: str) -> str:
    return f"{s.median:{fmt}} ({s.min:{fmt}}-{s.max:{fmt}})"


def print_table(report: Report) -> None:
    print(f"checkpoint around a tool call that writes, edits, deletes and runs sed on one file each "
          f"(git {report.git}); median (min-max) over {report.rounds} round(s)")
    head = (f"{'files':>7} {'tree':>10} {'cold':>9} {'unchanged':>9} {'checkpoint ms':>22} "
            f"{'call ms':>18} {'ratio':>14} {'disk/call':>10} {'shadow':>10} {'/tree':>6}")
    print(head)
    for t in report.trees:
        print(f"{t.files:>7} {_size(t.tree_disk_bytes):>10} {t.cold_ms / 1000:>8.2f}s "
              f"{t.unchanged_ms:>7.1f}ms {_range(t.checkpoint_ms, '.1f'):>22} {_range(t.call_ms, '.1f'):>18} "
              f"{_range(t.ratio, '.0f'):>14} {_size(t.growth_bytes.median):>10} "
              f"{_size(t.shadow_disk_bytes):>10} {t.shadow_over_tree:>6.2f}")
    print("checkpoint = before + after snapshot (with the diff and the checkpoint row); call = the four "
          "changes, the sed subprocess included; ratio = checkpoint / call; disk/call = growth of the "
          "shadow repository per call; shadow = its size at the end (du), /tree = over the tree's du")
    if report.kept:
        print(f"kept: {report.kept}")
