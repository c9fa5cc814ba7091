"""Making untrusted text safe to show in a terminal.

Anything that came from a model, a tool, the database or the command line can carry
terminal control sequences (ESC, the 8-bit CSI/OSC introducers U+009B/U+009D, DEL) or
bidirectional overrides that make a command read as something else. `safe_text` shows
each such code point as a visible escape (`\\x1b`, `\\u202e`) instead of passing it
through; `safe_json` is JSON that stays exact (such code points become JSON's own
`\\u` escapes) and valid (no Infinity or NaN). Every front end prints through these two.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

# Bidirectional formatting: marks, embeddings, overrides and isolates (Trojan Source).
BIDI_CONTROLS = frozenset(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
# Line and paragraph separators: some terminals and editors break lines on them.
LINE_SEPARATORS = frozenset([0x2028, 0x2029])
SURROGATES = range(0xD800, 0xE000)  # lone halves: arguments that were not valid UTF-8


def is_unsafe(code: int) -> bool:
    """C0, DEL, C1, bidi controls, line separators and lone surrogates."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or code in BIDI_CONTROLS
        or code in LINE_SEPARATORS
        or 0xD800 <= code < 0xE000
    )


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), *BIDI_CONTROLS, *LINE_SEPARATORS, *SURROGATES]
_TEXT_TABLE = {c: _escape(c) for c in _UNSAFE}
_LINES_TABLE = {c: e for c, e in _TEXT_TABLE.items() if c != 0x0A}
_JSON_TABLE = {c: f"\\u{c:04x}" for c in _UNSAFE}


def safe_text(text: object, *, keep_newlines: bool = False) -> str:
    """`text` with every control, bidi and separator code point shown as an escape.

    A tab becomes `\\x09` too: one cell per character keeps tables aligned.
    `keep_newlines=True` keeps `\\n` (for multi-line bodies); `\\r` is always escaped, so
    a line can never be overwritten from its start.
    """
    s = text if isinstance(text, str) else str(text)
    return s.translate(_LINES_TABLE if keep_newlines else _TEXT_TABLE)


def _finite(obj: Any) -> Any:
    """Non-finite floats become None: JSON has no Infinity or NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def safe_json(obj: Any) -> str:
    """One line of valid, exact JSON that a terminal shows as text.

    Non-ASCII text stays readable; only the unsafe code points are written as `\\uXXXX`
    (inside strings, where JSON allows it, so a parser gets back the exact string).
    """
    builtins = msgspec.to_builtins(obj)
    try:
        text = json.dumps(builtins, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the data
        text = json.dumps(_finite(builtins), ensure_ascii=False, allow_nan=False)
    return text.translate(_JSON_TABLE)


def shorten(text: str, width: int = 200) -> str:
    """One line of at most `width` characters (runs of whitespace become one space), an
    ellipsis marking a cut: the one truncating helper for titles, summaries and lines."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return text[: width - 1] + "…" if width > 0 else ""
