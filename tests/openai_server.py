"""A real OpenAI-compatible server for the tests: llama-cpp-python's own
(`python -m llama_cpp.server`) on a free loopback port, serving the embedded SmolLM2.

The process handling (`LlamaCppServer`: start, wait until /v1/models answers, stop) lives
in app/bench/llama_cpp_server.py, which `bench inference --vs-server` uses too.
`server_unavailable` skips a test when the server cannot run here, and fails it under
CI=true, where a missing real server must not pass as a skip.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

from app.bench.llama_cpp_server import ALIAS, LlamaCppServer, free_port, missing


def server_unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"real OpenAI-compatible server unavailable under CI: {reason}")
    pytest.skip(f"real OpenAI-compatible server unavailable: {reason}")


def start_or_skip(**kwargs: Any) -> LlamaCppServer:
    """A started server, or skip (fail under CI) with the reason it could not start."""
    reason = missing()
    if reason:
        server_unavailable(reason)
    server = LlamaCppServer(**kwargs)
    try:
        return server.start()
    except RuntimeError as err:
        server_unavailable(str(err))


__all__ = ["ALIAS", "LlamaCppServer", "free_port", "server_unavailable", "start_or_skip"]
