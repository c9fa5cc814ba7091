"""Where a llama.cpp build crashes on a new machine, in one short run (issue 22): each way
of loading a model runs in its own subprocess under faulthandler, so a segfault in one
still lets the others report, and the first full load (or agentdeck read) that crashes is rerun under cuda-gdb
(the GPU image's only debugger) for the native backtrace.

    python scripts/gpu_probe.py MODEL.gguf [--cap SECONDS]

Prints one line per case ("ok", "crashed (signal 11)", "failed (rc N)", "timed out") and
exits 0; what each case printed is kept in its own output, shown for those that failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each case is a small program: MODEL is the model's path.
PRELUDE = """
import ctypes, faulthandler, sys, threading
faulthandler.enable()
if "lazy" not in sys.argv[2:]:  # llama.cpp's libraries loaded on the main thread first
    import llama_cpp
MODEL = sys.argv[1].encode()

def load(vocab_only, n_gpu_layers=-1, no_devices=False):
    import llama_cpp
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = vocab_only
    params.n_gpu_layers = n_gpu_layers
    if no_devices:  # an empty NULL-terminated device list: no GPU is looked at
        params.devices = ctypes.cast((ctypes.c_void_p * 1)(None), ctypes.c_void_p)
    ptr = llama_cpp.llama_model_load_from_file(MODEL, params)
    assert ptr, "load returned NULL"
    llama_cpp.llama_model_free(ptr)

def in_thread(fn, *args, **kw):
    errors = []
    def run():
        try:
            fn(*args, **kw)
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=run)
    t.start(); t.join()
    if errors:
        raise errors[0]
"""

# What `bench inference` does first: the engine answers a request.
ENGINE_REQUEST = (
    "import asyncio\nfrom agents.config import InferenceConfig\n"
    "from agents.inference import build_backend\n"
    "from app.bench.inference_scenarios import greedy\n"
    "async def go():\n"
    "    eng = build_backend(InferenceConfig(n_ctx=4096, slots=5, n_batch=256), model=MODEL.decode(),"
    " sampling=greedy())\n"
    "    await eng.start()\n"
    "    try:\n"
    "        ask = [{'role': 'user', 'content': 'warm up'}]\n"
    "        print(await eng.submit(ask, max_tokens=8, agent='probe'))\n"
    "    finally:\n"
    "        await eng.stop()\n"
    "asyncio.run(go())"
)

CASES: dict[str, str] = {
    "vocab-only, main thread": "load(True)",
    "vocab-only, no devices, main thread": "load(True, no_devices=True)",
    "vocab-only, in a thread": "in_thread(load, True)",
    "full load on the GPU, main thread": "load(False)",
    "full load on the GPU, in a thread": "in_thread(load, False)",
    "full load on the CPU, main thread": "load(False, n_gpu_layers=0)",
    "agentdeck read_shape, main thread":
        "from pathlib import Path\nfrom agents.inference.model import read_shape\n"
        "print(read_shape(Path(MODEL.decode())))",
    "agentdeck NVML reading, then read_shape, main thread":
        "from pathlib import Path\nfrom agents.inference.gpu import read_gpus\n"
        "from agents.inference.model import read_shape\nprint(read_gpus())\n"
        "print(read_shape(Path(MODEL.decode())))",
    "agentdeck engine start and stop":
        "from agents.config import InferenceConfig\nfrom agents.inference.engine import Engine\n"
        "eng = Engine(InferenceConfig(n_ctx=4096, slots=5, n_batch=256), model_path=MODEL.decode())\n"
        "eng.start_sync()\neng.stop_sync()",
    # What `bench inference` does, in its order: the engine answers a request, then the
    # naive side (llama-cpp-python's high-level Llama) and the reference side load.
    "agentdeck engine, one request": ENGINE_REQUEST,
    "high-level Llama on the GPU, one completion (the bench's naive side)":
        "from agents.config import InferenceConfig\nfrom app.bench.inference_scenarios import Naive\n"
        "Naive(MODEL.decode(), InferenceConfig(n_ctx=4096, slots=5, n_batch=256)).llm.close()",
    "agentdeck reference side (the bench's bare loop)":
        "from agents.config import InferenceConfig\nfrom app.bench.inference_scenarios import Reference\n"
        "Reference(MODEL.decode(), InferenceConfig(n_ctx=4096, slots=5, n_batch=256), 2).close()",
    # Not loaded first on the main thread: in a thread; or after numpy, which on the H200
    # crashed the tokenizer (numpy's shared libstdc++ against the static one exported by
    # libggml-cuda.so) unless agentdeck maps llama.cpp first (agents/native_libs.py).
    "lazy: first load of the libraries in a thread, vocab-only there": "in_thread(load, True)",
    "lazy: numpy first, then vocab-only": "import numpy\nload(True)",
    "lazy: agentdeck, then numpy, then vocab-only": "import agents, numpy\nload(True)",
    "lazy: agentdeck engine, llama_cpp not imported first, one request": ENGINE_REQUEST,
    "agentdeck init_backend + vocab-only, main thread":
        "from agents.inference.model import init_backend\ninit_backend()\nload(True)",
}


def _lazy(name: str) -> list[str]:
    """The argument that keeps PRELUDE from importing llama_cpp first."""
    return ["lazy"] if name.startswith("lazy:") else []


def run_case(name: str, body: str, model: str, cap: float) -> tuple[str, str]:
    """(verdict, output) of one case in a fresh interpreter."""
    try:
        done = subprocess.run([sys.executable, "-c", PRELUDE + body + "\nprint('ok')", model, *_lazy(name)],
                              capture_output=True, text=True, timeout=cap, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timed out", out
    out = done.stdout + done.stderr
    if done.returncode < 0:
        return f"crashed (signal {-done.returncode})", out
    if done.returncode:
        return f"failed (rc {done.returncode})", out
    return "ok", out


def backtrace(name: str, body: str, model: str, cap: float) -> str:
    """The native backtrace of a crashing case under cuda-gdb, or why there is none."""
    gdb = shutil.which("cuda-gdb") or next(
        (p for p in ("/usr/local/cuda/bin/cuda-gdb",) if Path(p).exists()), None)
    if gdb is None:
        return "no cuda-gdb on this machine"
    script = REPO / "build" / "gpu-probe-case.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(PRELUDE + body + "\nprint('ok')\n")
    try:
        done = subprocess.run(
            [gdb, "-batch", "-nx", "-ex", "set pagination off", "-ex", "set cuda api_failures ignore",
             "-ex", "run", "-ex", "bt 40", "-ex", "info threads",
             "--args", sys.executable, str(script), model, *_lazy(name)],
            capture_output=True, text=True, timeout=cap, cwd=REPO)
    except subprocess.TimeoutExpired:
        return f"cuda-gdb ran past {cap:.0f} s"
    lines = (done.stdout + done.stderr).splitlines()
    heads = ("#", "Thread", "  Id", "*", "Program received", "Program terminated")
    keep = [ln for ln in lines if ln.startswith(heads) or "signal" in ln.lower()]
    return "\n".join(keep[-80:]) or "\n".join(lines[-40:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--cap", type=float, default=30.0, help="seconds per case")
    p.add_argument("--gdb-cap", type=float, default=60.0, help="seconds for the cuda-gdb rerun (0: none)")
    args = p.parse_args(argv)
    first_crash = None
    for name, body in CASES.items():
        verdict, out = run_case(name, body, args.model, args.cap)
        print(f"probe: {name}: {verdict}", flush=True)
        if verdict != "ok":
            print("\n".join("    " + ln for ln in out.splitlines()[-25:]), flush=True)
            # A crash the product works around (a vocab-only read with devices) is not
            # worth the debugger's time; one in a full load or in read_shape is.
            blocking = ("full load" in name or "agentdeck" in name or "Llama" in name or "lazy" in name) \
                and "numpy first" not in name  # a fact about the build, backtraced on the H200
            if first_crash is None and blocking and verdict.startswith("crashed") and args.gdb_cap > 0:
                first_crash = (name, body)
    if first_crash is not None:
        print(f"probe: cuda-gdb on '{first_crash[0]}':", flush=True)
        print(backtrace(*first_crash, args.model, args.gdb_cap), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
