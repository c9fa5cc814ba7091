"""The product imports only what it declares: no module under agents/, app/, widgets/ or
themes/ imports a dependency of the dev extra alone (pytest, hypothesis, pyte, jsonschema, …)
or the tests' own modules. An install without the dev extra would fail on that import,
and only there, at run time."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

from helpers import REPO

PRODUCT = ("agents", "app", "widgets", "themes")
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalized(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    found = set()
    for requirement in requirements:
        match = REQUIREMENT_NAME.match(requirement)
        assert match, f"not a requirement: {requirement!r}"
        found.add(_normalized(match.group(1)))
    return found


def dev_only_modules(pyproject: Path = REPO / "pyproject.toml", tests: Path = REPO / "tests") -> set[str]:
    """Top-level module names the product must not import: those of distributions in the
    dev extra and not in the dependencies (as installed, else the name with _ for -), and
    the tests' own modules (helpers, scripted_backend, …), which are not installed at all."""
    project = tomllib.loads(pyproject.read_text())["project"]
    dev_only = _names(project["optional-dependencies"]["dev"]) - _names(project["dependencies"])
    modules = {name.replace("-", "_") for name in dev_only}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if any(_normalized(d) in dev_only for d in distributions):
            modules.add(module)
    modules |= {"tests", *(p.stem for p in tests.glob("*.py"))}
    return modules


def dev_only_imports(source: str, filename: str, forbidden: set[str]) -> list[str]:
    """`filename:line module` for each import in `source` (at any depth: a lazy import in a
    function fails as surely, only later) whose top-level module is in `forbidden`.
    Relative imports are the product's own."""
    hits = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        hits += [f"{filename}:{node.lineno} {name}" for name in names if name.split(".")[0] in forbidden]
    return hits


def product_dev_only_imports(root: Path, forbidden: set[str]) -> list[str]:
    files = [p for d in PRODUCT for p in sorted((root / d).rglob("*.py"))]
    return [hit for p in files for hit in dev_only_imports(p.read_text(), str(p.relative_to(root)), forbidden)]


def test_the_product_imports_no_dev_only_dependency() -> None:
    forbidden = dev_only_modules()
    assert list((REPO / "agents").rglob("*.py"))  # the scan reads real files
    assert product_dev_only_imports(REPO, forbidden) == []


def test_dev_only_modules_come_from_the_dev_extra_and_the_tests() -> None:
    forbidden = dev_only_modules()
    assert {"pytest", "_pytest", "hypothesis", "pyte", "jsonschema", "pytest_timeout"} <= forbidden
    assert {"helpers", "scripted_backend", "conftest", "tests"} <= forbidden
    assert not {"textual", "msgspec", "psutil", "croniter", "agents", "app"} & forbidden  # runtime, or ours


def test_the_scanner_catches_dev_only_imports_at_any_depth() -> None:
    source = (
        "import json\n"
        "import jsonschema\n"
        "from hypothesis import given\n"
        "from agents.store import Store\n"
        "from . import pytest\n"  # relative: a module of the product's own
        "def later():\n"
        "    import pyte.screens\n"
        "    from scripted_backend import ScriptedBackend\n"
    )
    assert dev_only_imports(source, "agents/x.py", dev_only_modules()) == [
        "agents/x.py:2 jsonschema", "agents/x.py:3 hypothesis",
        "agents/x.py:7 pyte.screens", "agents/x.py:8 scripted_backend"]


def test_the_scan_fails_for_agents_importing_jsonschema(tmp_path: Path) -> None:
    for package in PRODUCT:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("import msgspec\n")
    (tmp_path / "agents" / "checks.py").write_text("import textual\n\nimport jsonschema.validators\n")
    assert product_dev_only_imports(tmp_path, dev_only_modules()) == ["agents/checks.py:3 jsonschema.validators"]
