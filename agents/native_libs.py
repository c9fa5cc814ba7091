"""llama.cpp's shared libraries, loaded before numpy's.

On an H200 whose toolchain links libstdc++ statically into libggml-cuda.so (and exports
it), a process that had loaded numpy (and with it the shared libstdc++) before llama.cpp
segfaulted the first time a model loaded, inside the tokenizer's std::regex: the two
libstdc++ copies disagree on locale facets. The same build never crashed with llama.cpp
loaded first, in 16 probe cases and all eight `bench inference` runs
(bench/gpu-2026-12-04.md). `agents/__init__.py` imports this module first, so whatever
part of agentdeck a process imports, llama.cpp's libraries are mapped before numpy's.

Only the native libraries load here (a few milliseconds on a CPU build), not the
`llama_cpp` Python module; a missing or broken build is left for the engine to report.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

#: The library that was loaded, or why none was ("numpy first", "no llama_cpp", ...).
state: str = "not tried"


def library_path() -> Path | None:
    """Where llama-cpp-python keeps libllama (honouring its LLAMA_CPP_LIB_PATH), or None."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        base = Path(override)
    else:
        try:
            spec = importlib.util.find_spec("llama_cpp")
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        base = Path(next(iter(spec.submodule_search_locations))) / "lib"
    path = base / "libllama.so"
    return path if path.exists() else None


def preload() -> str:
    """Map libllama and its ggml backends into the process, once; says what happened.
    llama-cpp-python later opens the same path with the same flags and gets this handle."""
    global state
    if state != "not tried":
        return state
    if not sys.platform.startswith("linux"):
        state = "not needed on " + sys.platform
    elif "numpy" in sys.modules:
        state = "numpy first"  # too late to order them; nothing to gain by trying
    else:
        path = library_path()
        if path is None:
            state = "no llama_cpp"
        else:
            try:
                ctypes.CDLL(str(path))
                state = str(path)
            except OSError as err:  # the engine's own import reports it, with context
                state = f"not loaded: {err}"
    return state


preload()
