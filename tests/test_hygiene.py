"""Standing rules, checked on the source: bounded queues only; agents/ never imports textual;
imports flow app → widgets → agents, and themes stand alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

QUEUE_NAMES = {"Queue", "LifoQueue", "PriorityQueue"}


def _unbounded_queues(path: Path, root: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in QUEUE_NAMES:
            continue
        size = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "maxsize"), None
        )
        if size is None or (isinstance(size, ast.Constant) and size.value in (0, None)):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_unbounded_queues_in_app_and_agents() -> None:
    files = [p for d in ("app", "agents", "widgets") for p in (REPO / d).rglob("*.py")]
    assert files
    offenders = [hit for p in files for hit in _unbounded_queues(p)]
    assert offenders == []


def test_the_checker_catches_an_unbounded_queue(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nq = asyncio.Queue()\nr = asyncio.Queue(maxsize=0)\ns = asyncio.Queue(8)\n")
    assert _unbounded_queues(bad, tmp_path) == ["bad.py:2", "bad.py:3"]


def test_agents_package_never_imports_textual() -> None:
    code = (
        "import importlib, pkgutil, sys, agents\n"
        "for m in pkgutil.walk_packages(agents.__path__, 'agents.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.'))\n"
        "print(len([n for n in sys.modules if n.startswith('agents.')]), bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, bad = proc.stdout.split(" ", 1)
    assert int(count) > 10  # it really imported the engine
    assert bad.strip() == "[]"


# Imports flow app → widgets → agents; themes stand alone.
FORBIDDEN = {
    "agents": {"app", "widgets", "themes", "textual"},
    "widgets": {"app"},
    "themes": {"app", "widgets", "agents"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def layer_violations(root: Path) -> list[str]:
    found = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            for name in sorted(imported_roots(path) & banned):
                found.append(f"{path.relative_to(root)} imports {name}")
    return found


def test_imports_flow_app_to_widgets_to_agents_and_themes_stand_alone() -> None:
    assert layer_violations(REPO) == []


def test_the_layer_check_catches_a_widget_importing_app(tmp_path: Path) -> None:
    for package in FORBIDDEN:
        (tmp_path / package).mkdir()
    (tmp_path / "widgets" / "bad.py").write_text("from app.cockpit import Cockpit\n")
    (tmp_path / "themes" / "worse.py").write_text("import agents.config\n")
    assert layer_violations(tmp_path) == ["widgets/bad.py imports app", "themes/worse.py imports agents"]


# Front ends and benches build their backend with agents.inference.build_backend, the one
# place that decides what to build; none constructs the llama engine itself.
BUILT_BY_THE_FACTORY = {"Engine"}


def direct_engine_calls(root: Path, dirs: tuple[str, ...] = ("app", "screenshots")) -> list[str]:
    found = []
    for d in dirs:
        for path in sorted((root / d).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name in BUILT_BY_THE_FACTORY:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_front_end_or_bench_constructs_the_engine() -> None:
    assert list((REPO / "app" / "bench").glob("*.py"))  # the scan really reads the benches
    assert direct_engine_calls(REPO) == []


def test_the_engine_check_catches_a_direct_construction(tmp_path: Path) -> None:
    for d in ("app", "screenshots"):
        (tmp_path / d).mkdir()
    (tmp_path / "app" / "bad.py").write_text(
        "from agents.inference import Engine, build_backend\n"
        "a = build_backend(cfg)\n"
        "e = Engine(cfg, model_path=p)\n")
    (tmp_path / "screenshots" / "worse.py").write_text("import agents.inference as i\ne = i.Engine(cfg)\n")
    assert direct_engine_calls(tmp_path) == ["app/bad.py:3", "screenshots/worse.py:2"]
