"""llama.cpp's shared libraries load before numpy's, whatever part of agentdeck a process
imports first (agents.native_libs): on the H200 a CUDA build segfaulted when numpy's came
first. Each case is a fresh interpreter; the dynamic loader's own trace (LD_DEBUG=files)
gives the order the libraries were opened in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF loading order")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("LLAMA_CPP_LIB_PATH", "LD_DEBUG")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=full)


def _opened(trace: str) -> list[str]:
    """The files the loader opened on request (dlopen), in order."""
    return [line.split("file=", 1)[1].split(" [", 1)[0] for line in trace.splitlines()
            if "file=" in line and "dynamically loaded by" in line]


@pytest.mark.parametrize("module", ["agents.inference", "app.cli", "app.tui", "app.bench.inference_scenarios",
                                    "agents.memory.convert", "agents.runtime.host"])
def test_llama_cpp_is_mapped_before_numpy(module: str) -> None:
    # app.cli imports the standard library alone until it builds its parser, which
    # registers every command (tests/test_commands_layout.py): the parser is built too.
    done = _run(f"import importlib, sys; m = importlib.import_module({module!r}); "
                "getattr(m, 'build_parser', lambda: None)(); "
                "print('llama_cpp' in sys.modules, 'numpy' in sys.modules)", LD_DEBUG="files")
    assert done.returncode == 0, done.stderr[-2000:]
    opened = _opened(done.stderr)
    llama = [i for i, f in enumerate(opened) if f.endswith("/libllama.so")]
    numpy = [i for i, f in enumerate(opened) if "/numpy/" in f]
    assert llama, f"libllama was never loaded by {module}"
    if numpy:
        assert llama[0] < numpy[0], f"{module}: numpy's {opened[numpy[0]]} before libllama"
    # The native library only: importing agentdeck still leaves the Python bindings alone.
    assert done.stdout.split()[0] == "False"


def test_numpy_first_is_said_not_hidden() -> None:
    done = _run("import numpy, agents; print(agents.native_libs.state)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy first"


def test_without_a_library_agentdeck_still_imports(tmp_path: Path) -> None:
    done = _run("import agents.inference, agents; print(agents.native_libs.state)",
                LLAMA_CPP_LIB_PATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no llama_cpp"


def test_a_broken_library_is_left_for_the_engine_to_report(tmp_path: Path) -> None:
    (tmp_path / "libllama.so").write_bytes(b"not an ELF file")
    done = _run("import agents.inference, agents; print(agents.native_libs.state)",
                LLAMA_CPP_LIB_PATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("not loaded: "), done.stdout
    assert str(tmp_path) in done.stdout
