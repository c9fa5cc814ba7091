"""A real OpenAI-compatible server for the tests: llama-cpp-python's own
(`python -m llama_cpp.server`) on a free loopback port, serving the embedded SmolLM2.

`LlamaCppServer` starts it, waits until /v1/models answers (bounded; a server that dies
or never answers raises with the tail of its log), and stops it (SIGTERM, then SIGKILL).
`server_unavailable` skips a test when the server cannot run here, and fails it under
CI=true, where a missing real server must not pass as a skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx2
import pytest

from agents.inference.model import embedded_model_path

ALIAS = "smollm2"  # the model name the server lists (--model_alias)
START_TIMEOUT_S = 90.0  # loading a 135M model takes a few seconds; a loaded machine, more
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"real OpenAI-compatible server unavailable under CI: {reason}")
    pytest.skip(f"real OpenAI-compatible server unavailable: {reason}")


class LlamaCppServer:
    def __init__(self, *, n_ctx: int = 2048, model: Path | None = None, extra_args: Sequence[str] = ()) -> None:
        self.extra_args = list(extra_args)  # e.g. --api_key KEY
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.n_ctx = n_ctx
        self.model = model or embedded_model_path()
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaCppServer:
        """Start and wait until it lists its model; RuntimeError (with its log) otherwise."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
             # By default a new request interrupts the running one; agents share a server.
             "--interrupt_requests", "False", *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        give_up = time.monotonic() + START_TIMEOUT_S
        with httpx2.Client(timeout=2.0) as client:
            while time.monotonic() < give_up:
                if self.process.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    # 401: up, and guarding its models with --api_key
                    if client.get(f"{self.url}/models").status_code in (200, 401):
                        return self
                except httpx2.HTTPError:
                    pass  # not listening yet
                time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {START_TIMEOUT_S:g} s: {tail}")

    def kill(self) -> None:
        """Die at once, as a crashed server does (no graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
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


def start_or_skip(**kwargs: Any) -> LlamaCppServer:
    """A started server, or skip (fail under CI) with the reason it could not start."""
    try:
        import fastapi  # noqa: F401  (the server's extra: missing means not installed here)
        import llama_cpp.server  # noqa: F401
    except ImportError as err:
        server_unavailable(f"{err} (pip install -e '.[dev]')")
    server = LlamaCppServer(**kwargs)
    try:
        return server.start()
    except RuntimeError as err:
        server_unavailable(str(err))


__all__ = ["ALIAS", "LlamaCppServer", "free_port", "server_unavailable", "start_or_skip"]
