"""Tables for people line up in terminal cells, not code points."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from app.render import table


@pytest.mark.timeout(10)
def test_a_table_aligns_wide_characters_by_cells(capsys: pytest.CaptureFixture[str]) -> None:
    # Three CJK characters take six cells; len() would pad them as three.
    table(["name", "state"], [["日本語", "ok"], ["abcdef", "ok"], ["🚀x", "ok"]])
    lines = capsys.readouterr().out.splitlines()
    starts = {cell_len(row[: row.rindex("ok" if "ok" in row else "state")]) for row in lines}
    assert len(starts) == 1, lines  # every second column starts in the same cell
