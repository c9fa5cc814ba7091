"""The `agentdeck` command: the top-level parser, dispatch, and the one-line error
boundary. The commands register themselves: app/commands/ (one module per noun) and
app/bench/.

Only the standard library is imported at module level: everything else is imported
inside `main()`'s error boundary, so a Ctrl-C while the imports run (the first few
tenths of a second) exits 130 quietly instead of printing a traceback.
"""

from __future__ import annotations

import os
import signal

# Until main()'s boundary is in place, Ctrl-C ends the process quietly with 130; main()
# then imports everything else inside that boundary. (Imported elsewhere, app.cli gives
# SIGINT back at the end of the module.)
try:
    _previous_sigint = signal.signal(signal.SIGINT, lambda *_: os._exit(130))
except ValueError:  # imported off the main thread: signals are not ours to set
    _previous_sigint = None

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from app.args import Parser, home_dir


def build_parser() -> argparse.ArgumentParser:
    from app.bench import register as register_bench
    from app.commands import register_all

    parser = Parser(
        prog="agentdeck",
        description="A crew of five local LLM agents in one terminal.",
        epilog="Agents think with the embedded llama.cpp model, or with model servers you already run "
               "(llama-server, vLLM, SGLang, Ollama): [backends.NAME] in config.toml, one per agent if "
               "you like; `agentdeck doctor` checks each, `agentdeck bench inference --backend NAME` "
               "measures one. See docs/backends.md.",
    )
    parser.add_argument("--headless", action="store_true", help="with no COMMAND: run without the TUI")
    parser.add_argument("--home", metavar="DIR", type=home_dir, help="state and config dir (default: "
                        "$AGENTDECK_HOME or the platform's user data dir)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    register_all(sub)  # one module per noun in app/commands/
    register_bench(sub)
    return parser


def _print_error(message: str) -> None:
    from agents.safe_text import safe_text

    sys.stderr.write(f"agentdeck: {safe_text(message)}\n")


def _interrupt_again(unraisable: sys.UnraisableHookArgs) -> None:
    """A Ctrl-C that lands in a finalizer (a __del__ run by the collector, or importlib's
    module-lock callback while modules import) is swallowed there and printed as
    "Exception ignored ... KeyboardInterrupt": end the process as the Ctrl-C asked, 130
    and nothing printed. (Raising it again from here would only be ignored in turn.)
    Anything else goes to the default hook."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        os._exit(130)
    sys.__unraisablehook__(unraisable)


def _exit_quietly(*_: object) -> None:
    os._exit(130)


def entry() -> NoReturn:
    """The `agentdeck` console script: main() as the whole process, so a Ctrl-C from its
    clean-up to the interpreter's exit ends it with 130 and nothing printed."""
    sys.exit(main(_process=True))


def main(argv: Sequence[str] | None = None, *, _process: bool = False) -> int:
    ctx = None
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _interrupt_again
    try:
        if _process:  # from here a Ctrl-C is a KeyboardInterrupt that this boundary catches
            _set_sigint(signal.default_int_handler)
        # A stdout or stderr that cannot encode some character (a latin-1 or ASCII pipe)
        # shows it as an escape instead of failing halfway through the output.
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        import sqlite3

        from agents.errors import AgentdeckError
        from app.context import Context
        from app.logs import setup_logging

        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # `agentdeck [--headless]`: run
            rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--headless"]
            args = parser.parse_args([*rest, "run", *(["--headless"] if args.headless else [])])
        setup_logging()
        ctx = Context(args.home)
        try:
            return args.handler(ctx, args)
        except AgentdeckError as err:
            _print_error(str(err))
            return err.exit_code
        except sqlite3.Error as err:  # locked past the busy timeout, disk full, I/O error
            from agents.store.database import disk_full

            _print_error(str(disk_full(ctx.db_path, err) or f"database {ctx.db_path}: {err}"))
            return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agentdeck log | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # e.g. a home dir we cannot create or write
        _print_error(f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}")
        return 1
    except Exception as err:  # a bug: still one line; AGENTDECK_DEBUG=1 shows the traceback
        if os.environ.get("AGENTDECK_DEBUG"):
            raise
        _print_error(f"internal error: {type(err).__name__}: {err} "
                     "(run with AGENTDECK_DEBUG=1 for details)")
        return 1
    finally:
        # A Ctrl-C now would interrupt closing the store (a traceback from store.close(),
        # 1 run in 75 here): from here on it ends the process at once (WAL keeps the file
        # sound). A caller in the same process gets its own handler back.
        sigint = _set_sigint(_exit_quietly)
        if ctx is not None:
            ctx.close()
        if not _process:
            _set_sigint(sigint)
            sys.unraisablehook = previous_hook


def _set_sigint(handler: object) -> object:
    """Install a SIGINT handler and return the one before (none off the main thread)."""
    try:
        return signal.signal(signal.SIGINT, handler)  # type: ignore[arg-type]
    except (ValueError, TypeError):  # not the main thread, or nothing to restore
        return None


def _runs_as_the_process() -> bool:
    """`python -m app.cli` or the `agentdeck` console script: entry() follows at once. Giving
    SIGINT back before main()'s boundary would leave a gap in which a Ctrl-C prints a
    traceback (CI hit it once in 1300 runs, signalled just after the imports)."""
    return __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "agentdeck"


if _previous_sigint is not None and not _runs_as_the_process():
    signal.signal(signal.SIGINT, _previous_sigint)

if __name__ == "__main__":
    entry()
