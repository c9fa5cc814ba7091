"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) as a child
process on a free loopback port: for `bench inference --vs-server` and the real-server tests.

`launch` starts it (returns at once), `wait_ready` waits until /v1/models answers (bounded;
a server that dies or never answers raises RuntimeError with the tail of its log), `stop`
ends it (SIGTERM, then SIGKILL; bounded). It stays in our process group, so a Ctrl-C at
the terminal reaches it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2

from agents.inference.model import embedded_model_path

ALIAS = "smollm2"  # the model name the server lists (--model_alias)
START_TIMEOUT_S = 90.0  # loading a 135M model takes a few seconds; a loaded machine, more
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing() -> str:
    """Why the server cannot run here ("" when it can): its extra is not installed."""
    # Looked up, not imported: the server's extra is a dev dependency, never the product's.
    for module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return (f"No module named {module!r} (pip install 'llama-cpp-python[server]', "
                    "or pip install -e '.[dev]')")
    return ""


class LlamaCppServer:
    def __init__(self, *, n_ctx: int = 2048, model: Path | None = None, alias: str = ALIAS,
                 extra_args: Sequence[str] = (), start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.extra_args = list(extra_args)  # e.g. --api_key KEY, --n_threads N
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.n_ctx = n_ctx
        self.model = model or embedded_model_path()
        self.alias = alias
        self.start_timeout_s = start_timeout_s
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> LlamaCppServer:
        """Start the process; returns at once (wait_ready waits for it to answer)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
             "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
             "--n_ctx", str(self.n_ctx),
             # By default a new request interrupts the running one; agents share a server.
             "--interrupt_requests", "False", *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self) -> LlamaCppServer:
        """Until it lists its model; RuntimeError (with its log) when it exits or does not
        answer within start_timeout_s (then it is stopped)."""
        assert self.process is not None, "launch first"
        give_up = time.monotonic() + self.start_timeout_s
        with httpx2.Client(timeout=2.0) as client:
            while time.monotonic() < give_up:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"llama_cpp.server exited with {code}: {self.log_tail()}")
                try:
                    # 401: up, and guarding its models with --api_key
                    if client.get(f"{self.url}/models").status_code in (200, 401):
                        return self
                except httpx2.HTTPError:
                    pass  # not listening yet
                time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {self.start_timeout_s:g} s: {tail}")

    def start(self) -> LlamaCppServer:
        """Launch and wait until it lists its model; RuntimeError (with its log) otherwise."""
        return self.launch().wait_ready()

    def kill(self) -> None:
        """Die at once, as a crashed server does (no graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Ends it whatever state it is in; safe to call twice."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ALIAS", "LlamaCppServer", "free_port", "missing"]
