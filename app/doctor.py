"""`agentdeck doctor`: one line per check, ok or what to do."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable

import msgspec

from agents.config import CONFIG_FILE
from agents.errors import AgentdeckError
from agents.secrets import backend_name, keyring_usable
from agents.store.database import check_file
from agents.store.schema import SCHEMA_VERSION
from app.context import Context
from app.render import print_json


class Check(msgspec.Struct):
    name: str
    status: str  # ok, warn, fail
    detail: str


def _config(ctx: Context) -> Check:
    path = ctx.home / CONFIG_FILE
    config = ctx.config  # raises ConfigError with the key path
    where = str(path) if path.exists() else f"defaults (no {path}; `agentdeck init` writes one)"
    return Check("config", "ok", f"{where}; agents: {', '.join(config.enabled_agents())}")


def _database(ctx: Context) -> Check:
    """Read-only: doctor never creates, migrates or writes the database."""
    if not ctx.db_path.exists():
        return Check("database", "ok", f"{ctx.db_path} will be created on first use")
    check_file(ctx.db_path)  # not a database at all: StoreOpenError, file untouched
    conn = sqlite3.connect(f"{ctx.db_path.as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] if version else 0
    finally:
        conn.close()
    if result != "ok":
        return Check("database", "fail", f"{ctx.db_path}: quick_check says {result}; restore a backup")
    if version > SCHEMA_VERSION:
        return Check("database", "fail", f"{ctx.db_path}: schema {version} is newer than this "
                     f"agentdeck ({SCHEMA_VERSION}); upgrade agentdeck")
    note = "" if version == SCHEMA_VERSION else f"; will be migrated to schema {SCHEMA_VERSION}"
    return Check("database", "ok", f"{ctx.db_path} (schema {version}, {events} events{note})")


def _model(ctx: Context) -> Check:
    from agents.inference.model import resolve_model_path

    path = resolve_model_path(None, ctx.config.inference.model)
    size_mb = path.stat().st_size / 1e6
    return Check("model", "ok", f"{path} ({size_mb:.0f} MB)")


def _llama(_ctx: Context) -> Check:
    try:
        import llama_cpp
    except Exception as err:  # ImportError, or its shared library failing to load
        return Check("llama-cpp-python", "fail", f"cannot import ({err}); run `make run` to install")
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    return Check(
        "llama-cpp-python", "ok",
        f"{llama_cpp.__version__}, " + ("GPU offload built in" if gpu else "CPU build "
        "(for CUDA: CMAKE_ARGS=-DGGML_CUDA=on pip install --force-reinstall llama-cpp-python)"),
    )


def _gpu(_ctx: Context) -> Check:
    from agents.inference.gpu import read_gpu

    info = read_gpu()
    if info is None:
        return Check("gpu", "ok", "no NVIDIA GPU seen by NVML: running on the CPU")
    used, total = info.vram_used_bytes / 2**20, info.vram_total_bytes / 2**20
    return Check("gpu", "ok", f"{info.name}, {used:.0f}/{total:.0f} MiB VRAM used")


def _keyring(_ctx: Context) -> Check:
    if keyring_usable():
        return Check("keyring", "ok", backend_name())
    return Check(
        "keyring", "warn",
        f"no usable backend ({backend_name()}); secrets come from AGENTDECK_SECRET_<NAME>",
    )


CHECKS: list[Callable[[Context], Check]] = [_config, _database, _model, _llama, _gpu, _keyring]
NAMES = ["config", "database", "model", "llama-cpp-python", "gpu", "keyring"]


def run_checks(ctx: Context) -> list[Check]:
    results = []
    for check, name in zip(CHECKS, NAMES, strict=True):
        try:
            results.append(check(ctx))
        except (AgentdeckError, sqlite3.Error, OSError) as err:
            results.append(Check(name, "fail", str(err)))
    return results


def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    results = run_checks(ctx)
    if args.json:
        print_json(results)
    else:
        for c in results:
            print(f"{c.status:<4}  {c.name:<16}  {c.detail}")
    return 1 if any(c.status == "fail" for c in results) else 0
