"""system_health and list_processes: the machine, through psutil and NVML."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Literal

import msgspec
import psutil

from agents.inference.gpu import read_gpus
from agents.tools.base import Tool, ToolContext


class NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ProcessArgs(msgspec.Struct, forbid_unknown_fields=True):
    sort: Literal["cpu", "memory"] = "cpu"
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 15


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _health(workspace: str) -> str:
    cpu = psutil.cpu_percent(interval=0.3)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    disk = psutil.disk_usage(workspace)
    lines = [
        f"cpu: {cpu:.0f}% of {psutil.cpu_count()} cores; load {load}",
        f"memory: {_gib(mem.used)} used of {_gib(mem.total)} ({mem.percent:.0f}%), "
        f"{_gib(mem.available)} available; swap {swap.percent:.0f}% used",
        f"disk (workspace): {_gib(disk.used)} used of {_gib(disk.total)} ({disk.percent:.0f}%), "
        f"{_gib(disk.free)} free",
        f"uptime: {(time.time() - psutil.boot_time()) / 3600:.1f} h",
    ]
    gpus = read_gpus()
    if not gpus:
        lines.append("gpu: none seen by NVML (running on the CPU)")
    for g in gpus:
        busy = f", {g.utilization_pct}% busy" if g.utilization_pct is not None else ""
        lines.append(f"gpu {g.index}: {g.name}, {g.vram_used_bytes / 2**20:.0f}/"
                     f"{g.vram_total_bytes / 2**20:.0f} MiB VRAM{busy}")
    return "\n".join(lines)


async def system_health(ctx: ToolContext, _args: NoArgs) -> str:
    return await asyncio.to_thread(_health, str(ctx.workspace))


def _processes(sort: str, limit: int) -> str:
    procs = []
    for p in psutil.process_iter(["pid", "name", "username", "cpu_percent", "memory_info"]):
        info = p.info
        rss = info["memory_info"].rss if info["memory_info"] else 0
        procs.append((info["cpu_percent"] or 0.0, rss, info["pid"], info["name"] or "?",
                      info["username"] or "?"))
    key = (lambda t: t[0]) if sort == "cpu" else (lambda t: t[1])
    procs.sort(key=key, reverse=True)
    # Ranked, the name first: measured, given a table led by pids, Qwen-0.5B answered
    # "which process uses the most memory?" with a pid.
    lines = [f"processes by {'CPU' if sort == 'cpu' else 'memory'}, the most first:"]
    lines += [f"{rank}. {name}: {rss / 2**20:.0f} MB memory, {cpu:.1f}% CPU (pid {pid}, user {user})"
              for rank, (cpu, rss, pid, name, user) in enumerate(procs[:limit], 1)]
    return "\n".join(lines)


async def list_processes(_ctx: ToolContext, args: ProcessArgs) -> str:
    return await asyncio.to_thread(_processes, args.sort, args.limit)


MACHINE_TOOLS = [
    Tool("system_health", "CPU, memory, disk, load and GPU of this machine.", NoArgs, "read",
         system_health, timeout_s=15),
    Tool("list_processes", "The busiest processes, by CPU or memory.", ProcessArgs, "read",
         list_processes, timeout_s=15),
]
