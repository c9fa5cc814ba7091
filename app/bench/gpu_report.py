"""`bench inference --json` runs (one model, one concurrency each) into one JSON object and a
Markdown table: what scripts/gpu-check leaves in $OUT (gpu-bench.json, gpu-bench.md).

    python -m app.bench.gpu_report RUNS_DIR --json OUT.json --md OUT.md \\
        [--device TEXT] [--commit SHA] [--command TEXT] [--phases FILE]

RUNS_DIR holds `bench-<model>-<n>.json` files; one that is missing, empty or not a report
(a run cut short by its timeout) becomes a row that says so, never an error, so whatever
finished still reaches the table. --phases is a file of `name seconds status` lines.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import msgspec

from app.bench.harness import Stat
from app.bench.inference import Report

RUN_FILE = re.compile(r"^bench-(?P<model>.+)-(?P<agents>\d+)\.json$")


class Row(msgspec.Struct, kw_only=True):
    """One model at one concurrency: the engine's figures beside the sides it is measured against."""

    model: str  # the label gpu-check gave the run (smollm2-135m, random-1b)
    agents: int  # concurrent requests
    ok: bool
    error: str = ""  # why there are no figures
    model_file: str = ""
    device: str = ""  # as the engine reported it: a GPU's name, or CPU
    rounds: int = 0
    tokens_per_request: int = 0
    engine_tokens_per_s: float | None = None
    reference_tokens_per_s: float | None = None
    naive_tokens_per_s: float | None = None
    engine_over_reference: float | None = None
    engine_over_naive: float | None = None
    ttft_ms: float | None = None  # engine, mean over requests, from when all were asked
    itl_p50_ms: float | None = None
    itl_p99_ms: float | None = None
    prefix_cache_speedup: float | None = None
    engine_load_s: float | None = None


class Phase(msgspec.Struct, array_like=True):
    name: str
    seconds: float
    status: str  # ok, failed (rc N), timeout, skipped


class GpuBench(msgspec.Struct, kw_only=True):
    device: str
    commit: str
    command: str
    phases: list[Phase]
    rows: list[Row]


def _median(s: Stat | None, scale: float = 1.0) -> float | None:
    return None if s is None else round(s.median * scale, 3)


def row_of(path: Path) -> Row:
    """A run file's row; a file that does not hold a report gives a row saying why."""
    m = RUN_FILE.match(path.name)
    if m is None:
        raise ValueError(f"{path.name}: not a bench-<model>-<n>.json name")
    model, agents = m["model"], int(m["agents"])
    try:
        r = msgspec.json.decode(path.read_bytes(), type=Report)
    except FileNotFoundError:
        return Row(model=model, agents=agents, ok=False, error="not run")
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        text = path.read_text(errors="replace").strip()
        return Row(model=model, agents=agents, ok=False,
                   error="no output (timed out or failed)" if not text else f"not a report: {str(e)[:120]}")
    return Row(
        model=model, agents=agents, ok=True, model_file=r.model, device=r.device, rounds=r.rounds,
        tokens_per_request=r.tokens_per_request,
        engine_tokens_per_s=_median(r.engine.tokens_per_s),
        reference_tokens_per_s=_median(r.reference.tokens_per_s if r.reference else None),
        naive_tokens_per_s=_median(r.naive.tokens_per_s if r.naive else None),
        engine_over_reference=_median(r.engine_over_reference),
        engine_over_naive=_median(r.engine_over_naive),
        ttft_ms=_median(r.engine.ttft_s, 1000.0),
        itl_p50_ms=_median(r.engine.itl_p50_ms),
        itl_p99_ms=_median(r.engine.itl_p99_ms),
        prefix_cache_speedup=_median(r.prefix_cache.speedup),
        engine_load_s=r.engine_load_s,
    )


def read_phases(path: Path | None) -> list[Phase]:
    if path is None or not path.exists():
        return []
    phases = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3:
            phases.append(Phase(name=parts[0], seconds=float(parts[1]), status=parts[2]))
    return phases


def collect(runs: Path, *, device: str, commit: str, command: str, phases: Path | None = None,
            expected: list[tuple[str, int]] | None = None) -> GpuBench:
    """Every run file in `runs`, sorted by model and concurrency; `expected` runs that left no
    file at all get a 'not run' row."""
    rows = {(r.model, r.agents): r for r in (row_of(p) for p in runs.glob("bench-*.json"))}
    for model, agents in expected or []:
        rows.setdefault((model, agents), Row(model=model, agents=agents, ok=False, error="not run"))
    # Models in the order they were expected (the order they ran), then any others by name.
    first = {m: i for i, (m, _) in reversed(list(enumerate(expected or [])))}
    ordered = sorted(rows.values(), key=lambda r: (first.get(r.model, len(first)), r.model, r.agents))
    return GpuBench(device=device, commit=commit, command=command, phases=read_phases(phases), rows=ordered)


def _cell(v: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if v is None else f"{v:.{digits}f}{suffix}"


def markdown(b: GpuBench) -> str:
    """The results file's body: what ran where, then one row per model and concurrency."""
    lines = [
        "# `bench inference` on a GPU",
        "",
        f"- device: {b.device}",
        f"- commit: `{b.commit}`",
        f"- command: `{b.command}`",
    ]
    done = [r for r in b.rows if r.ok]
    if done:
        r0 = done[0]
        lines.append(f"- each run: {r0.tokens_per_request} tokens per request, {r0.rounds} round(s), "
                     "greedy, end-of-generation suppressed; medians over rounds")
    lines += [
        "",
        "| model | requests | engine tok/s | reference tok/s | naive tok/s | engine ÷ reference "
        "| engine ÷ naive | TTFT ms | ITL p50 ms | ITL p99 ms | engine device |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in b.rows:
        if not r.ok:
            lines.append(f"| {r.model} | {r.agents} | {r.error} | | | | | | | | |")
            continue
        lines.append(
            f"| {r.model} | {r.agents} | {_cell(r.engine_tokens_per_s)} | {_cell(r.reference_tokens_per_s)} "
            f"| {_cell(r.naive_tokens_per_s)} | {_cell(r.engine_over_reference, 2, '×')} "
            f"| {_cell(r.engine_over_naive, 2, '×')} | {_cell(r.ttft_ms, 0)} | {_cell(r.itl_p50_ms, 2)} "
            f"| {_cell(r.itl_p99_ms, 2)} | {r.device} |"
        )
    if b.phases:
        lines += ["", "| phase | seconds | status |", "| --- | ---: | --- |"]
        lines += [f"| {p.name} | {p.seconds:.0f} | {p.status} |" for p in b.phases]
    lines += ["", "naive: high-level `Llama`, one request after another · reference: llama.cpp's batch "
              "API, no scheduling · engine: all requests submitted at once · TTFT: mean, from when all "
              "were asked · ITL: inter-token latency", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench.gpu_report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, help="the folder of bench-<model>-<n>.json files")
    p.add_argument("--json", type=Path, required=True, dest="json_out")
    p.add_argument("--md", type=Path, required=True)
    p.add_argument("--device", default="unknown")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--command", default="")
    p.add_argument("--phases", type=Path)
    p.add_argument("--expect", nargs="*", default=[], metavar="MODEL:N",
                   help="runs that should be there (a row each even if it left no file)")
    args = p.parse_args(argv)
    expected = [(m, int(n)) for m, _, n in (e.rpartition(":") for e in args.expect)]
    bench = collect(args.runs, device=args.device, commit=args.commit, command=args.command,
                    phases=args.phases, expected=expected)
    args.json_out.write_bytes(msgspec.json.format(msgspec.json.encode(bench)) + b"\n")
    args.md.write_text(markdown(bench))
    print(f"{sum(r.ok for r in bench.rows)} of {len(bench.rows)} runs reported -> {args.json_out}, {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
