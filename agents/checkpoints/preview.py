"""What a write would change, shown with its approval (placeholder until the full module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PREVIEW_TOOLS = frozenset({"write_file", "edit_file", "append_file"})


def write_preview(tool: str, arguments: Any, workspace: Path) -> str | None:
    return None
