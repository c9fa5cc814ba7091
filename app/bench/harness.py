"""What every `agentdeck bench` shares: the common options, the backend a bench runs on
(--backend), the order the sides of a comparison run in each round, and a figure's median
and range (min–max) over rounds.

A shared machine drifts: run side A then side B once and the ratio says as much about the
moment as about A and B. So each round runs every side, in an order rotated by one each
round (for two sides: A B, then B A, ...), and a figure is reported as the median over
rounds with its range beside it.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeVar

import msgspec
from rich.console import Console

from agents.config import Config
from agents.config.load import EMBEDDED_BACKEND
from agents.config.schema import BackendConfig
from agents.errors import ConfigError
from app.args import at_least_one

T = TypeVar("T")

MAX_ROUNDS = 1000  # more is a typo, not a benchmark: it would run for days


def rounds_count(text: str) -> int:
    """--rounds: a whole number, 1..MAX_ROUNDS (argparse makes a bad one a one-line error)."""
    value = at_least_one(text)
    if value > MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_ROUNDS} rounds, got {value}")
    return value


def add_common(p: argparse.ArgumentParser, *, rounds: int | None = None,
               rounds_help: str = "interleaved rounds", model: bool = False, backend: bool = False) -> None:
    """--json on every bench; --rounds (default `rounds`) on one that repeats a measurement;
    --model on one that loads a model; --backend on one that can run on any backend."""
    p.add_argument("--json", action="store_true", help="print one JSON object")
    if rounds is not None:
        p.add_argument("--rounds", type=rounds_count, default=rounds, metavar="N",
                       help=f"{rounds_help} (default {rounds})")
    if model:
        p.add_argument("--model", default=None, metavar="MODEL",
                       help="a GGUF file or an installed model's name (default: config, else the "
                            "embedded SmolLM2)")
    if backend:
        p.add_argument("--backend", default=None, metavar="NAME",
                       help="run on this backend, a name from the config's [backends] (default: the "
                            "config's default backend)")


class Chosen(msgspec.Struct, frozen=True, kw_only=True):
    """The backend a bench runs on: its name and settings ("embedded" when not configured)."""

    name: str
    settings: BackendConfig

    @property
    def embedded(self) -> bool:
        return self.settings.kind == "embedded"


def choose_backend(config: Config, name: str | None) -> Chosen:
    """--backend NAME (None: the config's default) as its settings; an unknown name is a
    one-line ConfigError listing the names there are."""
    name = name or config.default_backend
    if name in config.backends:
        return Chosen(name=name, settings=config.backends[name])
    if name == EMBEDDED_BACKEND:
        return Chosen(name=name, settings=BackendConfig(kind="embedded"))
    known = ", ".join(sorted({EMBEDDED_BACKEND, *config.backends}))
    raise ConfigError(f"no backend named {name!r}; the config has: {known}")


def only_on(config: Config, chosen: Chosen) -> Config:
    """A copy of `config` in which every agent thinks with `chosen` (for build_backends)."""
    agents = {n: msgspec.structs.replace(a, model="") for n, a in config.agents.items()}
    return msgspec.structs.replace(config, default_backend=chosen.name, agents=agents)


def order(sides: Sequence[T], round_: int) -> list[T]:
    """The sides in the order round `round_` (from 0) runs them: rotated by one each round,
    so no side always runs first (or always last)."""
    if not sides:
        return []
    k = round_ % len(sides)
    return [*sides[k:], *sides[:k]]


class Spread(NamedTuple):
    """One figure over rounds."""

    median: float
    low: float
    high: float


def spread(values: Iterable[float]) -> Spread:
    """The median and range of a figure's values, one per round (an even count's median is
    the mean of the middle two)."""
    vals = list(values)
    if not vals:
        raise ValueError("no values: a figure needs at least one round")
    return Spread(statistics.median(vals), min(vals), max(vals))


class Stat(msgspec.Struct, kw_only=True):
    """One figure over the rounds: median, range, and each round's value."""

    median: float
    min: float
    max: float
    rounds: list[float]


def stat(values: list[float], digits: int) -> Stat:
    vals = [round(v, digits) for v in values]
    s = spread(vals)
    return Stat(median=round(s.median, digits + 1), min=s.low, max=s.high, rounds=vals)


def say(err: Console, text: str) -> None:
    """Progress for a person watching; a pipe gets only the result."""
    if err.is_terminal:
        err.print(f"[dim]{text}[/]")
