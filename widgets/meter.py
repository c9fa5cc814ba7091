"""The GPU slot meter: device, slots busy/free and who holds each, waiting requests, KV
cells, VRAM and utilisation when there is a GPU, aggregate tokens/s with a sparkline of
the last minute. Redrawn from a snapshot by the app's timer."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from agents.inference.meter import MeterSnapshot
from agents.safe_text import safe_text

SPARK_SECONDS = 60
SLOT_GLYPHS = {"idle": "·", "prefill": "◐", "generating": "●"}


def meter_text(meter: MeterSnapshot | None, progress: float | None = None) -> Text:
    text = Text()
    if meter is None:
        if progress is not None:
            text.append(f"loading the model… {progress * 100:.0f}%")
        else:
            text.append("no meter (the instance is not running)", style="dim")
        return text
    busy = sum(1 for s in meter.slots if s.state != "idle")
    text.append(f"{safe_text(meter.device)}", style="bold")
    text.append(f"  {safe_text(meter.model)}  {meter.state}\n", style="dim")
    text.append(f"slots {busy}/{len(meter.slots)} busy")
    waiting = sum(meter.waiting.values())
    text.append(f"   waiting {waiting}\n")
    for slot in meter.slots:
        glyph = SLOT_GLYPHS.get(slot.state, "?")
        who = safe_text(slot.agent) if slot.agent else "-"
        rate = f" {slot.tokens_per_s:.0f} tok/s" if slot.state == "generating" else ""
        text.append(f" {glyph} slot {slot.index}: {who:<8} {slot.state}{rate}\n")
    text.append(f"KV {meter.kv_used}/{meter.kv_total} cells")
    if meter.gpu is not None:
        gpu = meter.gpu
        util = f"  util {gpu.utilization_pct}%" if gpu.utilization_pct is not None else ""
        text.append(f"\nVRAM {gpu.vram_used_bytes >> 20}/{gpu.vram_total_bytes >> 20} MiB{util}")
    text.append(f"\n{meter.tokens_per_s:.1f} tok/s")
    return text


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
        text = meter_text(meter, progress)
        if text != self._shown:
            # Same number of lines: same size, so no layout pass.
            same_size = self._shown is not None and self._shown.plain.count("\n") == text.plain.count("\n")
            self._shown = text
            self.query_one("#meter-text", Static).update(text, layout=not same_size)
        if now - self._last_sample >= 1.0:  # one sparkline sample a second: the last minute
            self._last_sample = now
            self.history.append(meter.tokens_per_s if meter is not None else 0.0)
            self.query_one(Sparkline).data = list(self.history)
