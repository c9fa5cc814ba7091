"""`agentdeck doctor`: one line per check, ok or what to do."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from agents.config import CONFIG_FILE
from agents.errors import AgentdeckError
from agents.home import loose_permissions
from agents.safe_text import safe_text
from agents.secrets import backend_name, keyring_usable
from agents.store import AsyncStore, queries
from agents.store.database import check_file, disk_full, room_error
from agents.store.schema import SCHEMA_VERSION
from app.args import add_command, add_json_flag
from app.context import Context
from app.render import line, print_json

QUICK_CHECK_LINES = 5
FULL_BELOW = 1 << 20  # free bytes under which agentdeck's writes are about to fail
PROBE_TIMEOUT_S = 5.0  # each server call of a backend probe; doctor must answer promptly


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "doctor", cmd_doctor, "check the set-up, one line per part (each backend too)")
    add_json_flag(p)


class Check(msgspec.Struct):
    name: str
    status: str  # ok, warn, fail
    detail: str


def _config(ctx: Context) -> Check:
    path = ctx.home / CONFIG_FILE
    config = ctx.config  # raises ConfigError with the key path
    where = str(path) if path.exists() else f"defaults (no {path}; `agentdeck init` writes one)"
    return Check("config", "ok", f"{where}; agents: {', '.join(config.enabled_agents())}")


DAMAGED_HINT = (
    "stop agentdeck, move the file away and restore a copy made by `agentdeck backup` "
    "(or try `sqlite3 DB .recover`)"
)


# SQLite's result codes for a damaged file; any other failure (a full disk, a lock, I/O)
# says nothing about the file, so it never earns the advice to replace it.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def _damage(err: Exception) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(err, UnicodeDecodeError) or (isinstance(code, int) and code & 0xFF in (
        SQLITE_CORRUPT, SQLITE_NOTADB))


def _quick_check(db: Path, params: str = "mode=ro") -> list[str]:
    """PRAGMA quick_check's first lines, also when the schema itself is damaged (then
    SQLite cannot parse it, and its error message may not even be UTF-8). Raises
    sqlite3.OperationalError when it cannot look at the file at all."""
    for writable_schema in (False, True):
        conn = sqlite3.connect(f"{db.as_uri()}?{params}", uri=True)
        try:
            if writable_schema:  # read past a schema that does not parse
                conn.execute("PRAGMA writable_schema = ON")
            return [row[0] for row in conn.execute(f"PRAGMA quick_check({QUICK_CHECK_LINES})")]
        except (sqlite3.DatabaseError, UnicodeDecodeError) as err:
            if not _damage(err):
                raise
            problem = _sqlite_message(err)
        finally:
            conn.close()
    return [problem]


def _inspect(db: Path) -> tuple[list[str], int, int]:
    """quick_check's problems (none: sound), the schema version and the event count."""
    try:
        return _inspect_with(db, "mode=ro")
    except sqlite3.OperationalError:
        if _size(Path(f"{db}-wal")):
            raise
        # An empty WAL (a failed open leaves one behind), so the file alone is the database:
        # read it without the shared-memory file SQLite could not grow (a full disk).
        return _inspect_with(db, "mode=ro&immutable=1")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _inspect_with(db: Path, params: str) -> tuple[list[str], int, int]:
    problems = [line for line in _quick_check(db, params) if line != "ok"]
    if problems:
        return problems, 0, 0
    conn = sqlite3.connect(f"{db.as_uri()}?{params}", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] if version else 0
    finally:
        conn.close()
    return problems, version, events


def _sqlite_message(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):  # SQLite quoted damaged bytes in its message
        return "malformed database schema (SQLite's message is not even text)"
    return str(err)


def _database(ctx: Context) -> Check:
    """Read-only: doctor never creates, migrates or writes the database. Only a failed
    quick_check calls it damaged: a full disk or a lock is no reason to replace it."""
    db = ctx.db_path
    if not db.exists():
        return Check("database", "ok", f"{db} will be created on first use")
    check_file(db)  # not a database at all: StoreOpenError, file untouched
    try:
        problems, version, events = _inspect(db)
    except sqlite3.OperationalError as err:
        full = disk_full(db, err)
        if full is not None:
            return Check("database", "fail", f"{full} (quick_check cannot run until there is room; "
                         "nothing says the database is damaged)")
        return Check("database", "fail", f"{db}: cannot check it right now ({err}); not a sign "
                     "of damage")
    if problems:
        return Check("database", "fail", f"{db} is damaged: {'; '.join(problems)}. "
                     f"What to do: {DAMAGED_HINT}")
    if version > SCHEMA_VERSION:
        return Check("database", "fail", f"{db}: schema {version} is newer than this "
                     f"agentdeck ({SCHEMA_VERSION}); upgrade agentdeck")
    low = room_error(db)
    if low is not None:  # short of the room asked for; a fail once even small writes cannot fit
        status = "fail" if room_error(db, need=FULL_BELOW) else "warn"
        return Check("database", status, f"{low} (the database passes quick_check: keep it)")
    note = "" if version == SCHEMA_VERSION else f"; will be migrated to schema {SCHEMA_VERSION}"
    return Check("database", "ok", f"{db} (schema {version}, {events} events{note})")


def _model(ctx: Context) -> Check:
    from agents.inference.model import resolve_model_path

    path = resolve_model_path(None, ctx.config.inference.model, home=ctx.home)
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


def _permissions(ctx: Context) -> Check:
    loose = loose_permissions(ctx.home)
    if not loose:
        return Check("permissions", "ok", f"{ctx.home} is private to its user")
    listed = ", ".join(f"{path} ({mode:04o})" for path, mode in loose)
    return Check("permissions", "warn", f"other users can read: {listed}; any agentdeck "
                 "command except doctor makes them private (or chmod go= them)")


def _sandbox(ctx: Context) -> Check:
    from agents.tools.shell import INSTALL_HINT, find_bwrap

    mode = ctx.config.sandbox
    bwrap = find_bwrap()
    if mode == "off":
        return Check("sandbox", "warn", "sandbox = \"off\": shell commands run unsandboxed, with your "
                     "rights, once allowed")
    if bwrap is None:
        status = "fail" if mode == "bwrap" else "warn"
        effect = "run_shell refuses to run" if mode == "bwrap" else "every shell command asks (fail closed)"
        return Check("sandbox", status,
                     f"bubblewrap is missing or cannot run here, so {effect}; {INSTALL_HINT}")
    return Check("sandbox", "ok", f"bubblewrap at {bwrap}: workspace writable, the rest read-only, "
                 "home hidden, no network")


def _checkpoints(ctx: Context) -> Check:
    """git is what checkpoints, undo and worktrees run on; the shadow repositories' size."""
    import shutil

    from agents.checkpoints.shadow import SHADOW_DIR
    from agents.checkpoints.worktrees import is_repository

    if not ctx.config.checkpoints.enabled:
        return Check("checkpoints", "warn", "[checkpoints] enabled = false: changes are not recorded, "
                     "nothing can be undone")
    git = shutil.which("git")
    if git is None:
        return Check("checkpoints", "warn", "git is not installed: tool calls run, but what they change "
                     "is not recorded and cannot be undone; install git")
    shadow = ctx.home / SHADOW_DIR
    size = sum(p.stat().st_size for p in shadow.rglob("*") if p.is_file()) if shadow.is_dir() else 0
    worktrees = [n for n, a in ctx.config.enabled_agents().items() if a.isolation == "worktree"]
    where = (f"; {', '.join(worktrees)} work in worktrees (the workspace is a git repository)"
             if worktrees and is_repository(ctx.config.workspace_path()) else "")
    return Check("checkpoints", "ok", f"git at {git}; shadow repositories {size / 1e6:.1f} MB{where}")


MCP_DOCTOR_START_S = 15.0  # each server's start and listing, at most, for doctor


def _mcp(ctx: Context) -> list[Check]:
    """One line per configured MCP server: reachable, its tools, and how they stand
    against the pins (changed or new ones are withheld from agents). Read-only: doctor
    records no listing, so it never pins anything."""
    if not ctx.config.mcp:
        return []
    from agents.mcp.hub import McpHub
    from agents.store.reducers.mcp import tool_hash

    pins = {(t.server, t.name): t for t in ctx.store.read(queries.mcp_tools)}

    async def probe() -> list[Check]:
        store = await AsyncStore(ctx.db_path, ctx.config.enabled_agents()).open()
        hub = McpHub(ctx.config, ctx.home, store)
        try:
            probes = (_mcp_one(name, conn) for name, conn in hub.connections.items())
            return list(await asyncio.gather(*probes))
        finally:
            await hub.stop()
            await store.close()

    async def _mcp_one(name: str, conn: Any) -> Check:
        where = f"mcp.{name}"
        if not conn.config.enabled:
            return Check(where, "ok", "disabled in the config")
        try:
            async with asyncio.timeout(min(conn.config.start_timeout_s, MCP_DOCTOR_START_S)):
                listed = await conn.start()
        except (AgentdeckError, TimeoutError) as err:
            return Check(where, "warn", f"not reachable: {safe_text(str(err) or 'no answer in time')}; "
                         f"its agents ({', '.join(conn.config.agents) or 'none'}) keep their other tools")
        changed = new = pinned = 0
        for tool in listed:
            pin = pins.get((name, tool.name))
            if pin is None or pin.pinned_hash is None:
                new += 1
            elif pin.pinned_hash != tool_hash(tool.name, tool.description, tool.input_schema):
                changed += 1
            else:
                pinned += 1
        first = " (first listing: the instance pins them when it starts)" if not any(
            s == name for s, _ in pins) else ""
        status = "warn" if (changed or new) and not first else "ok"
        hint = f"; `agentdeck mcp approve {name}` after reading the change" if status == "warn" else ""
        return Check(where, status, f"reachable ({conn.transport}); {len(listed)} tool(s): {pinned} pinned, "
                     f"{changed} changed, {new} new{first}{hint}")

    return asyncio.run(probe())


def _keyring(_ctx: Context) -> Check:
    if keyring_usable():
        return Check("keyring", "ok", backend_name())
    return Check(
        "keyring", "warn",
        f"no usable backend ({backend_name()}); secrets come from AGENTDECK_SECRET_<NAME>",
    )


def _agents_on(ctx: Context, backend: str) -> list[str]:
    config = ctx.config
    return [name for name, a in config.enabled_agents().items()
            if (a.model or config.default_backend) == backend]


def _backends(ctx: Context) -> list[Check]:
    """One line per backend some agent uses, when there is more than the embedded one
    (that one is the model check's). Remote servers are probed at once, each call within
    PROBE_TIMEOUT_S; one that fails is a warning naming it and the agents it leaves
    without a model, never an error of doctor's own."""
    from agents.config.load import EMBEDDED_BACKEND
    from agents.inference.factory import backends_in_use

    config = ctx.config
    used = backends_in_use(config)
    if used == [EMBEDDED_BACKEND]:
        return []
    remote = [n for n in used if n in config.backends and config.backends[n].kind == "openai"]
    probed = asyncio.run(_probe_all(ctx, remote)) if remote else {}
    checks = []
    for name in used:
        agents = _agents_on(ctx, name)
        try:
            checks.append(probed[name] if name in probed else _embedded_backend(ctx, name, agents))
        except (AgentdeckError, OSError) as err:
            checks.append(Check(f"backend {name}", "fail", str(err)))
    return checks


def _embedded_backend(ctx: Context, name: str, agents: list[str]) -> Check:
    from agents.inference.model import GIB, resolve_model_path

    settings = ctx.config.backends.get(name)
    model = settings.model if settings is not None and settings.model else ctx.config.inference.model
    path = resolve_model_path(None, model, home=ctx.home)
    size = path.stat().st_size / GIB
    return Check(f"backend {name}", "ok", f"embedded: {path} ({size:.2f} GiB of weights); "
                 f"agents: {', '.join(agents) or 'none (the default for the rest)'}")


async def _probe_all(ctx: Context, names: list[str]) -> dict[str, Check]:
    checks = await asyncio.gather(*(_probe(ctx, n, _agents_on(ctx, n)) for n in names))
    return dict(zip(names, checks, strict=True))


async def _probe(ctx: Context, name: str, agents: list[str]) -> Check:
    """Start the backend with short timeouts (start probes it and refuses a bad key or a
    missing model), probe it for the line, stop it."""
    from agents.inference.openai_backend import OpenAIBackend

    settings = ctx.config.backends[name]
    quick = msgspec.structs.replace(settings,
                                    connect_timeout_s=min(settings.connect_timeout_s, PROBE_TIMEOUT_S))
    backend = OpenAIBackend(name, quick, inference=ctx.config.inference)
    check_name = f"backend {name}"
    who = ", ".join(agents) or "none"
    fails = f"agents using it ({who}) will fail their tasks"
    try:
        with _quiet("agents.inference.openai"):  # its start warns of what this line says
            await backend.start()
            try:
                probe = await backend.probe()
            finally:
                await backend.stop()
    except AgentdeckError as err:  # a refused key, a model the server lacks, an env var unset
        return Check(check_name, "warn", f"{settings.url}: {err}; {fails}")
    if not probe.reachable or probe.problem:
        return Check(check_name, "warn", f"{probe.problem or probe.url + ' unreachable'}; {fails}")
    slots = f"{probe.slots} slots" if probe.slots is not None else "slots not shown"
    breaker = "breaker open" if probe.breaker_open else "breaker closed"
    detail = (f"{probe.url}: {probe.flavour}, model {backend.model!r} listed, {slots}, {breaker}; "
              f"agents: {who}")
    if not probe.structured_output:
        return Check(check_name, "warn", f"{detail}; it does not constrain output to a schema, so its "
                     "agents are weaker there (their answers are validated, not constrained)")
    return Check(check_name, "ok", f"{detail}; schema-constrained output")


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


CHECKS: list[tuple[str, Callable[[Context], Check]]] = [
    ("config", _config), ("database", _database), ("permissions", _permissions),
    ("model", _model), ("llama-cpp-python", _llama), ("gpu", _gpu), ("sandbox", _sandbox),
    ("checkpoints", _checkpoints), ("keyring", _keyring),
]


def run_checks(ctx: Context) -> list[Check]:
    """Every check runs and reports, whatever the ones before it found: doctor exists for
    the set-ups where things are broken."""
    results = []
    for name, check in CHECKS:
        try:
            results.append(check(ctx))
        except AgentdeckError as err:
            results.append(Check(name, "fail", str(err)))
        except (sqlite3.Error, UnicodeDecodeError) as err:
            results.append(Check(name, "fail", _sqlite_message(err)))
        except OSError as err:
            results.append(Check(name, "fail", f"{err.filename or ''} {err.strerror or err}".strip()))
        except Exception as err:  # a bug in a check must not hide the other checks
            results.append(Check(name, "fail", f"check failed: {type(err).__name__}: {err}"))
    for name, checks in (("mcp", _mcp), ("backends", _backends)):  # a line per server each
        try:
            results.extend(checks(ctx))
        except AgentdeckError:
            pass  # the config check above says what is wrong with it
        except Exception as err:  # a bug in a check must not hide the other checks
            results.append(Check(name, "fail", f"check failed: {type(err).__name__}: {err}"))
    return results


def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    results = run_checks(ctx)
    if args.json:
        print_json(results)
    else:
        for c in results:
            line(f"{c.status:<4}  {c.name:<16}  {c.detail}")
    return 1 if any(c.status == "fail" for c in results) else 0
