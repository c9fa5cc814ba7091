"""The tools agents may call: name -> Tool. See base.py for what a tool is."""

from __future__ import annotations

from agents.tools.base import Tool, ToolContext, ToolResult, invoke
from agents.tools.calc import CALC_TOOLS
from agents.tools.coordination import CREW_TOOLS
from agents.tools.files import FILE_TOOLS
from agents.tools.machine import MACHINE_TOOLS
from agents.tools.shell import SHELL_TOOLS

TOOLS: dict[str, Tool] = {t.name: t for t in [*FILE_TOOLS, *SHELL_TOOLS, *CREW_TOOLS, *MACHINE_TOOLS,
                                                 *CALC_TOOLS]}

__all__ = ["TOOLS", "Tool", "ToolContext", "ToolResult", "invoke"]
