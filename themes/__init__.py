"""agentdeck's themes: its own, registered beside Textual's dark and light ones, and the
stylesheet (`agentdeck.tcss`) every theme shares. Imports nothing of agentdeck's."""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

STYLESHEET = Path(__file__).with_name("agentdeck.tcss")

AGENTDECK = Theme(
    name="agentdeck",
    primary="#4FB3BF",  # teal: the deck
    secondary="#C792EA",
    accent="#FFCB6B",
    warning="#F78C6C",
    error="#FF5370",
    success="#C3E88D",
    foreground="#D6DEEB",
    background="#0B1622",
    surface="#122232",
    panel="#18304A",
    dark=True,
)

# Offered in the palette and accepted in `[ui] theme`.
THEMES = ("agentdeck", "textual-dark", "textual-light")
