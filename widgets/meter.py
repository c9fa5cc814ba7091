"""The GPU slot meter: device, slots busy/free and who holds each, waiting requests, KV
cells, VRAM and utilisation when there is a GPU, aggregate tokens/s with a sparkline of
the last minute. With several backends, each is a group of its own (name, kind, state,
load, its slots); a failed one or one whose circuit breaker is open is in the theme's
error colour. Redrawn from a snapshot by the app's timer (pulled, never pushed)."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from agents.inference.meter import BackendMeter, MeterSnapshot, SlotInfo
from agents.safe_text import safe_text

SPARK_SECONDS = 60
SLOT_GLYPHS = {"idle": "·", "prefill": "◐", "generating": "●"}
DOWN_STATES = ("failed", "breaker_open")  # shown in the theme's error colour
STATE_WORDS = {"breaker_open": "breaker open"}


def meter_text(meter: MeterSnapshot | None, progress: float | None = None, *,
               error_style: str = "red") -> Text:
    """The meter as text. With several backends (`meter.backends`), each is a group: its
    name, kind and state (failed or breaker open in `error_style`, with why), its load,
    then its slots. Everything a server or a config named goes through safe_text."""
    text = Text()
    if meter is None:
        if progress is not None:
            text.append(f"loading the model… {progress * 100:.0f}%")
        else:
            text.append("no meter (the instance is not running)", style="dim")
        return text
    busy = sum(1 for s in meter.slots if s.state != "idle")
    text.append(f"{safe_text(meter.device)}", style="bold")
    text.append(f"  {safe_text(meter.model)}  ", style="dim")
    text.append(f"{_state_word(meter.state)}\n", style=error_style if meter.state in DOWN_STATES else "dim")
    text.append(f"slots {busy}/{len(meter.slots)} busy")
    waiting = sum(meter.waiting.values())
    text.append(f"   waiting {waiting}\n")
    if meter.backends:
        for backend in meter.backends:
            _backend_lines(text, backend, [s for s in meter.slots if s.backend == backend.name], error_style)
    else:
        for slot in meter.slots:
            _slot_line(text, slot)
    tail = []
    if meter.kv_total or not meter.backends:  # servers' KV is a fraction, on their own lines
        tail.append(f"KV {meter.kv_used}/{meter.kv_total} cells")
    if meter.gpu is not None:
        gpu = meter.gpu
        util = f"  util {gpu.utilization_pct}%" if gpu.utilization_pct is not None else ""
        tail.append(f"VRAM {gpu.vram_used_bytes >> 20}/{gpu.vram_total_bytes >> 20} MiB{util}")
    tail.append(f"{meter.tokens_per_s:.1f} tok/s")
    text.append("\n".join(tail))
    return text


def _backend_lines(text: Text, backend: BackendMeter, slots: list[SlotInfo], error_style: str) -> None:
    down = backend.state in DOWN_STATES
    text.append(f"{safe_text(backend.name)}", style=f"bold {error_style}" if down else "bold")
    text.append(f" {safe_text(backend.kind)} ", style="dim")
    text.append(_state_word(backend.state), style=error_style if down else "dim")
    kv = f"  KV {backend.kv_usage:.0%}" if backend.kv_usage is not None else ""
    text.append(f"  run {backend.running} wait {backend.waiting}{kv}  {backend.tokens_per_s:.1f} tok/s\n")
    if backend.detail:
        text.append(f"  {safe_text(backend.detail)}\n", style=error_style if down else "dim")
    for slot in slots:
        _slot_line(text, slot)


def _slot_line(text: Text, slot: SlotInfo) -> None:
    glyph = SLOT_GLYPHS.get(slot.state, "?")
    who = safe_text(slot.agent) if slot.agent else "-"
    rate = f" {slot.tokens_per_s:.0f} tok/s" if slot.state == "generating" else ""
    text.append(f" {glyph} slot {slot.index}: {who:<8} {slot.state}{rate}\n")


def _state_word(state: str) -> str:
    return STATE_WORDS.get(state, state)


class SlotMeter(Vertical):
    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.history: deque[float] = deque([0.0] * SPARK_SECONDS, maxlen=SPARK_SECONDS)
        self._last_sample = 0.0
        self._shown: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="meter-text")
        yield Sparkline(list(self.history), summary_function=max, id="meter-spark")

    def show(self, meter: MeterSnapshot | None, now: float, progress: float | None = None) -> None:
        text = meter_text(meter, progress, error_style=self._error_style())
        if text != self._shown:
            # Same number of lines: same size, so no layout pass.
            same_size = self._shown is not None and self._shown.plain.count("\n") == text.plain.count("\n")
            self._shown = text
            self.query_one("#meter-text", Static).update(text, layout=not same_size)
        if now - self._last_sample >= 1.0:  # one sparkline sample a second: the last minute
            self._last_sample = now
            self.history.append(meter.tokens_per_s if meter is not None else 0.0)
            self.query_one(Sparkline).data = list(self.history)

    def _error_style(self) -> str:
        """The theme's error colour (red in the shipped themes)."""
        error = self.app.current_theme.error if self.is_attached else None
        return error or "red"
