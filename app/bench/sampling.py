"""`agentdeck bench sampling`: what picking one token costs, with and without a grammar.

The real model is loaded with the low-level API (as the engine does) and a realistic agent
prompt (a triage request from the crew's own prompts) is decoded once. Then, per case —
plain sampling, greedy, and both under the crew's triage JSON schema — two samplers run
side by side on the same context: `before`, the former algorithm (`FullPassSampler`,
kept in app/bench/sampling_baseline.py), and `after`, the engine's `SeqSampler`. Every
lane is its own llama.cpp sequence sharing the prompt's KV cells; each step decodes every
lane's last token in one batch and then times each lane's `sample()` call, in an order
that rotates every step, so both implementations see the same machine at the same moment. The sampled tokens
are fed back, so a grammar advances through real output; a schema lane whose JSON is
complete starts again from the prompt with the next seed. Only `sample()` is timed;
decoding, which only advances the lanes, runs on one thread.

Figures, never assertions: per case and implementation, the mean ms per token of each
round (median and range over rounds), the median single pick, and the picks the grammar
refused with how they were resolved. `same_output` counts the runs whose tokens were the
same for both implementations (the same seed; a new algorithm that draws the same token
for the same random number gives the same text).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import msgspec

from agents.config import Config, SamplingConfig, default_config
from agents.errors import ModelError
from agents.inference import resolve_model_path
from agents.inference.chat import ChatTemplate
from agents.inference.grammar import schema_to_gbnf
from agents.inference.model import LlamaModel
from agents.inference.sampling import Candidates, SeqSampler
from agents.inference.types import ChatMessage
from app.args import at_least_one
from app.bench import harness
from app.bench.sampling_baseline import FullPassCandidates, FullPassSampler
from app.context import Context
from app.render import line, print_json

HELP = "per-token sampler cost, plain and under a JSON schema"

IMPLS = ("before", "after")
# Decoding only advances the lanes (it is not measured): on one thread no OpenMP worker is
# left spinning beside the timed sampler, and an oversubscribed machine cannot stall it.
_DECODE_THREADS = 1

TASK = (
    "Task #41: the CI build on main fails since the last merge\n"
    "The test job stops in tests/test_store.py with 'database is locked' about one run in "
    "three. It started after the change that moved the bus writer to its own thread.\n"
    "(part of task #40: keep main green)"
)


class Case(msgspec.Struct, frozen=True):
    name: str
    sampling: SamplingConfig
    schema: bool  # constrained by the crew's triage schema


CASES = (
    Case(name="plain", sampling=SamplingConfig(), schema=False),
    Case(name="greedy", sampling=SamplingConfig(temperature=0.0), schema=False),
    Case(name="schema", sampling=SamplingConfig(), schema=True),
    Case(name="schema-greedy", sampling=SamplingConfig(temperature=0.0), schema=True),
)


class Figures(msgspec.Struct, kw_only=True):
    case: str
    impl: str  # before | after
    tokens: int  # timed picks, all rounds together
    ms_per_token: float  # median over rounds of the round's mean
    ms_per_token_range: tuple[float, float]  # min and max of the round means
    median_pick_ms: float  # median over rounds of the round's median single pick
    max_pick_ms: float  # the slowest single pick of all rounds
    refused: int  # picks the grammar refused (all rounds)
    narrowed: int  # ... resolved over the top candidates only
    full_pass: int  # ... resolved by the grammar over the whole vocabulary
    runs: int  # generations (a schema lane restarts when its JSON is complete)


class CaseSummary(msgspec.Struct, kw_only=True):
    case: str
    speedup: float  # before / after, of the median ms per token
    same_output: int  # runs whose tokens were the same for both implementations ...
    compared: int  # ... out of this many


class Report(msgspec.Struct, kw_only=True):
    model: str
    threads: int
    n_vocab: int
    prompt_tokens: int
    tokens: int  # timed picks per lane per round
    rounds: int
    figures: list[Figures]
    cases: list[CaseSummary]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=at_least_one, default=96, metavar="N",
                   help="picks per lane per round (default 96)")
    harness.add_common(p, rounds=5, model=True)


def triage_prompt() -> tuple[list[ChatMessage], dict[str, Any]]:
    """The crew's triage request for dev, and its schema: what the agents really send."""
    from agents.crew.prompts import triage_messages
    from agents.crew.schemas import triage_schema

    config = default_config()
    agents = list(config.agents)
    return triage_messages("dev", config.agents["dev"], TASK, agents), triage_schema(agents)


# --- the benchmark --------------------------------------------------------------------------


class _Lane:
    """One sequence: a case under one implementation."""

    def __init__(self, seq_id: int, case: Case, impl: str) -> None:
        self.seq_id = seq_id
        self.case = case
        self.impl = impl
        self.sampler: Any = None
        self.seed = 0
        self.pos = 0  # where the pending token goes
        self.pending = 0  # the token to decode next
        self.times: list[int] = []  # ns per pick, this round
        self.run: list[int] = []  # tokens of the current generation
        self.runs: list[list[int]] = []  # this round's generations, the last maybe cut short
        self.round_means: list[float] = []
        self.round_medians: list[float] = []
        self.max_ns = 0
        self.picks = 0
        self.refused = self.narrowed = self.full_pass = 0
        self.n_runs = 0
        self.all_runs: list[list[list[int]]] = []  # per round


class _Bench:
    def __init__(self, config: Config, model_path: str | None, tokens: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        inf = config.inference
        path = resolve_model_path(model_path, inf.model)
        self.model = LlamaModel(path, n_gpu_layers=inf.n_gpu_layers)
        model = self.model
        messages, schema = triage_prompt()
        template = ChatTemplate(model.chat_template(), bos_token=model.token_text(model.bos),
                                eos_token=model.token_text(model.eos))
        prompt = model.tokenize(template.render(messages), add_special=False, parse_special=True)
        if model.add_bos and model.bos >= 0 and (not prompt or prompt[0] != model.bos):
            prompt.insert(0, model.bos)
        self.prompt = prompt
        self.gbnf = schema_to_gbnf(schema)
        self.lanes = [_Lane(i, case, impl) for i, (case, impl) in
                      enumerate((c, m) for c in CASES for m in IMPLS)]
        self.threads = _DECODE_THREADS
        params = llama_cpp.llama_context_default_params()
        # The prompt's cells are shared by every lane; each adds at most `tokens` of its own.
        params.n_ctx = len(prompt) + len(self.lanes) * (tokens + 2) + 256
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = len(self.lanes)
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            model.close()
            raise ModelError(f"llama.cpp could not create a context for {path.name} (n_ctx={params.n_ctx})")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.cands = {"before": FullPassCandidates(llama_cpp, model.n_vocab),
                      "after": Candidates(llama_cpp, model.n_vocab)}
        try:
            self._decode_prompt()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for lane in self.lanes:
            self._free(lane)
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.model.close()

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, sequence, wants logits)."""
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = token, pos, 1, seq, logits
        b.n_tokens = len(items)
        ret = self.lib.llama_decode(self.ctx, b)
        if ret != 0:
            raise ModelError(f"llama_decode returned {ret}")

    def _decode_prompt(self) -> None:
        # All but the last prompt token, once, in sequence 0; every lane then shares those
        # cells and decodes the last token itself (its own logits, at each (re)start).
        head = self.prompt[:-1]
        for start in range(0, len(head), 512):
            chunk = head[start:start + 512]
            self._decode([(t, start + j, 0, False) for j, t in enumerate(chunk)])
        for lane in self.lanes[1:]:
            self.lib.llama_memory_seq_cp(self.mem, 0, lane.seq_id, 0, len(head))

    def _free(self, lane: _Lane) -> None:
        if lane.sampler is not None:
            stats = getattr(lane.sampler, "stats", None)
            if stats is not None:
                lane.refused += stats.refused
                lane.narrowed += stats.narrowed
                lane.full_pass += stats.full_pass
            lane.sampler.free()
            lane.sampler = None

    def _start(self, lane: _Lane) -> None:
        """A new generation from the end of the prompt, with the lane's next seed."""
        self._free(lane)
        if lane.run:
            lane.runs.append(lane.run)
        lane.run = []
        kind = FullPassSampler if lane.impl == "before" else SeqSampler
        case = lane.case
        lane.sampler = kind(self.lib, self.model, self.cands[lane.impl], case.sampling, seed=lane.seed,
                            gbnf=self.gbnf if case.schema else None, ignore_eos=not case.schema)
        lane.seed += 1
        lane.n_runs += 1
        n = len(self.prompt)
        self.lib.llama_memory_seq_rm(self.mem, lane.seq_id, n - 1, -1)
        lane.pos, lane.pending = n - 1, self.prompt[-1]

    def round(self, number: int, tokens: int, timed: bool) -> None:
        lanes = self.lanes
        for lane in lanes:
            lane.seed = 1000 * (number + 1)  # the same seeds for both implementations
            lane.times, lane.runs, lane.run = [], [], []
            self._start(lane)
        eog = self.model.eog_tokens
        step = 0
        while True:
            active = [lane for lane in lanes if len(lane.times) < tokens]
            if not active:
                break
            self._decode([(lane.pending, lane.pos, lane.seq_id, True) for lane in active])
            for i, lane in harness.order(list(enumerate(active)), step):  # nobody always picks first
                t0 = time.perf_counter_ns()
                token = lane.sampler.sample(self.ctx, i)
                lane.times.append(time.perf_counter_ns() - t0)
                lane.run.append(token)
                if token in eog:  # a schema lane's JSON is complete: again, next seed
                    self._start(lane)
                else:
                    lane.pending, lane.pos = token, lane.pos + 1
            step += 1
        for lane in lanes:
            lane.runs.append(lane.run)
            lane.run = []
            self._free(lane)
            if timed:
                lane.round_means.append(statistics.fmean(lane.times) / 1e6)
                lane.round_medians.append(statistics.median(lane.times) / 1e6)
                lane.max_ns = max(lane.max_ns, *lane.times)
                lane.picks += len(lane.times)
                lane.all_runs.append(lane.runs)
            else:  # the warm-up counts nothing
                lane.refused = lane.narrowed = lane.full_pass = lane.n_runs = 0

    def report(self, tokens: int, rounds: int) -> Report:
        figures = []
        for lane in self.lanes:
            means = harness.spread(lane.round_means)
            figures.append(Figures(
                case=lane.case.name, impl=lane.impl, tokens=lane.picks, ms_per_token=means.median,
                ms_per_token_range=(means.low, means.high),
                median_pick_ms=harness.spread(lane.round_medians).median, max_pick_ms=lane.max_ns / 1e6,
                refused=lane.refused, narrowed=lane.narrowed, full_pass=lane.full_pass, runs=lane.n_runs))
        cases = []
        for case in CASES:
            before, after = (next(x for x in self.lanes if x.case is case and x.impl == m) for m in IMPLS)
            same = compared = 0
            for runs_b, runs_a in zip(before.all_runs, after.all_runs, strict=True):
                for run_b, run_a in zip(runs_b, runs_a, strict=False):
                    compared += 1
                    same += run_b == run_a
            fig_b, fig_a = (next(f for f in figures if f.case == case.name and f.impl == m) for m in IMPLS)
            cases.append(CaseSummary(case=case.name, speedup=fig_b.ms_per_token / fig_a.ms_per_token,
                                     same_output=same, compared=compared))
        return Report(model=self.model.path.name, threads=self.threads, n_vocab=self.model.n_vocab,
                      prompt_tokens=len(self.prompt), tokens=tokens, rounds=rounds, figures=figures,
                      cases=cases)


def measure(config: Config, *, tokens: int, rounds: int, model: str | None = None) -> Report:
    """Load, warm up (a short untimed round), then `rounds` timed rounds."""
    bench = _Bench(config, model, tokens)
    try:
        bench.round(-1, min(tokens, 8), timed=False)
        for number in range(rounds):
            bench.round(number, tokens, timed=True)
        return bench.report(tokens, rounds)
    finally:
        bench.close()


def run(ctx: Context, args: argparse.Namespace) -> int:
    report = measure(ctx.config, tokens=args.tokens, rounds=args.rounds, model=args.model)
    if args.json:
        print_json(report)
        return 0
    line(f"{report.model}: {report.n_vocab} tokens, {report.threads} threads, prompt {report.prompt_tokens} "
         f"tokens; {report.rounds} interleaved rounds of {report.tokens} picks per lane")
    line("ms per pick, sampler only (decode excluded): round means (median, range), median single pick")
    line(f"{'case':<14} {'impl':<7} {'ms/token':>9} {'range':>15} {'median':>8} {'max':>7} "
         f"{'refused':>8} {'narrowed':>9} {'full':>5} {'runs':>5}")
    for f in report.figures:
        low, high = f.ms_per_token_range
        line(f"{f.case:<14} {f.impl:<7} {f.ms_per_token:9.3f} {low:7.3f}-{high:<7.3f} "
             f"{f.median_pick_ms:8.3f} {f.max_pick_ms:7.2f} {f.refused:8d} {f.narrowed:9d} {f.full_pass:5d} "
             f"{f.runs:5d}")
    line()
    for c in report.cases:
        line(f"{c.case:<14} before/after {c.speedup:5.2f}x   "
             f"same output in {c.same_output} of {c.compared} runs")
    return 0
