"""Model-load progress: a Rich bar on stderr fed by llama.cpp's load callback."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class LoadProgress:
    """`with LoadProgress(console, "loading x") as progress: build_backend(..., progress=progress)`.
    Silent when stderr is not a terminal."""

    def __init__(self, console: Console, label: str) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
            # Lines printed meanwhile go where they were sent: stdout may be a pipe.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._label = label

    def __enter__(self) -> Callable[[float], None]:
        self._progress.start()
        task = self._progress.add_task(self._label, total=1.0)
        # Rich's Progress is thread-safe: the engine thread may call this directly.
        return lambda value: self._progress.update(task, completed=value)

    def finish(self) -> None:
        """Take the bar off the screen (loaded); safe to call again, and __exit__ does."""
        self._progress.stop()

    def __exit__(self, *exc: object) -> None:
        self.finish()
