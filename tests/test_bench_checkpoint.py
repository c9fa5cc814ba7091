"""`agentdeck bench checkpoint` through the real CLI, at tiny sizes: the report's figures are
there and each round's checkpoint lists exactly the files the fake call changed. No timed
assertions: the times are whatever this machine gives."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import agentdeck_cmd, subprocess_env

from app.bench.checkpoint import generate

STAT = {"median", "min", "max", "rounds"}


def _bench(home: Path, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(home, **({"TMPDIR": str(tmp)} if tmp else {}))
    return subprocess.run(agentdeck_cmd("bench", "checkpoint", *args), env=env, capture_output=True,
                          text=True, timeout=100)


@pytest.mark.timeout(120)
def test_every_round_records_exactly_what_the_call_changed(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = _bench(tmp_path / "home", "--files", "50,200", "--rounds", "2", "--json", tmp=scratch)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["rounds"] == 2 and report["kept"] is None
    assert [t["files"] for t in report["trees"]] == [50, 200]
    for tree in report["trees"]:
        for name in ("checkpoint_ms", "before_ms", "after_ms", "call_ms", "shell_ms", "ratio", "growth_bytes"):
            assert set(tree[name]) == STAT and len(tree[name]["rounds"]) == 2, name
        assert tree["cold_ms"] > 0 and tree["unchanged_ms"] > 0
        assert tree["tree_bytes"] > 0 and tree["tree_disk_bytes"] >= tree["tree_bytes"]
        assert 0 < tree["cold_disk_bytes"] <= tree["shadow_disk_bytes"]
        assert tree["shadow_over_tree"] > 0 and tree["all_seen"] is True
        new_files = set()
        for r, one in enumerate(tree["rounds"]):
            # A new file, two edited (one by sed in a subprocess), one deleted: all seen.
            assert sorted(one["changed"].values()) == ["A", "D", "M", "M"], one
            assert one["recorded"] == one["changed"] and one["seen"] is True, one
            assert one["growth_bytes"] > 0  # new blobs and trees, at least
            assert one["ratio"] > 0 and one["call_ms"] >= one["shell_ms"] > 0
            new_files |= {p for p, s in one["changed"].items() if s == "A"}
            if r:  # each round deletes the file the round before wrote
                assert {p for p, s in one["changed"].items() if s == "D"} <= new_files
    assert list(scratch.iterdir()) == []  # the trees and shadow repositories are gone


@pytest.mark.timeout(60)
def test_keep_leaves_the_trees_and_says_where(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = _bench(tmp_path / "home", "--files", "20", "--rounds", "1", "--keep", tmp=scratch)
    assert proc.returncode == 0, proc.stderr
    kept = [line.removeprefix("kept: ") for line in proc.stdout.splitlines() if line.startswith("kept: ")]
    assert len(kept) == 1 and Path(kept[0]).parent == scratch
    assert (Path(kept[0]) / "tree-20").is_dir() and (Path(kept[0]) / "home" / "checkpoints").is_dir()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "says"), [
    (["--files", "0"], "--files: a tree has 10..200000 files, got 0"),
    (["--files", "abc"], "--files: not a whole number"),
    (["--files", "10000000"], "--files: a tree has 10..200000 files, got 10000000"),
    (["--files", "50,-3"], "--files: not a whole number"),
    (["--rounds", "0"], "--rounds: must be at least 1"),
])
def test_bad_input_is_one_line_and_nothing_runs(tmp_path: Path, args: list[str], says: str) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = _bench(tmp_path / "home", *args, tmp=scratch)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert list(scratch.iterdir()) == []


def test_generated_files_are_distinct_and_nested(tmp_path: Path) -> None:
    small, written = generate(tmp_path, 1000)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 1000 and len(small) == 999  # one big one per thousand
    assert written == sum(p.stat().st_size for p in files)
    assert len({p.read_bytes() for p in files}) == 1000  # git would store duplicates once
    assert {len(p.relative_to(tmp_path).parts) for p in files} == {3}
