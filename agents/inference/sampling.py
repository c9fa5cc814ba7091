"""Per-sequence token samplers (llama.cpp sampler chains). Engine thread only.

A pick the grammar does not refuse copies nothing the size of the vocabulary in Python:
- Logit bias (end-of-generation tokens, for benchmarks) and the repeat penalty change the
  logits of a few tokens only: the biased ones and the last 64 picks. llama.cpp's own
  samplers run on just those, written into llama.cpp's logits for the pick and put back
  after it. Over the whole vocabulary they cost a hash lookup per entry: most of a pick.
- The rest of the chain (top-k, top-p, min-p, temperature, dist; or greedy) runs in
  `llama_sampler_sample`, over the chain's own reused buffer.

A grammar (from a JSON schema) is checked the way llama.cpp's common sampler does it:
sample with the chain, then ask the grammar about that one token. A small model is
refused about one pick in three, and the grammar over the whole vocabulary costs several
milliseconds; so a refusal first runs the grammar over the best candidates by logit
(`_NARROW`, found by a partial sort) and uses that pick when it is provably the one the
whole-vocabulary pass would make (see `SeqSampler._narrowed`); only otherwise does it
pass over everything. Those passes fill one candidate array (`Candidates`, shared by all
sequences: the engine thread samples serially) in place.
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from typing import Any

import numpy as np

from agents.config import SamplingConfig

_PENALTY_LAST_N = 64  # repeat penalty looks this many tokens back
_NARROW = (128, 2048, 8192)  # candidates the grammar sees on a refusal before the whole vocabulary
_EPS = 1e-3  # logit margin: llama.cpp computes min-p's cut in float32

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Candidates:
    """The candidate array over the vocabulary, reused for every pick of every sequence."""

    def __init__(self, lib: Any, n_vocab: int) -> None:
        assert _TOKEN_DATA.itemsize == ctypes.sizeof(lib.llama_token_data)
        self.lib = lib
        self.n_vocab = n_vocab
        self._buf = (lib.llama_token_data * n_vocab)()
        self._template = (lib.llama_token_data * n_vocab)()
        np.frombuffer(self._template, dtype=_TOKEN_DATA)["id"] = np.arange(n_vocab, dtype=np.int32)
        self.view = np.frombuffer(self._buf, dtype=_TOKEN_DATA)
        self.array = _array(lib, self._buf, n_vocab)
        self.ref = ctypes.byref(self.array)
        self._raw = ctypes.c_float * n_vocab
        self._one_buf = (lib.llama_token_data * 1)()
        self._one = self._one_buf[0]  # shares the buffer
        self._one_array = _array(lib, self._one_buf, 1)
        self._one_ref = ctypes.byref(self._one_array)

    def logits(self, ctx: Any, idx: int) -> np.ndarray:
        """llama.cpp's own logits of output `idx` of the last decode (a view, not a copy)."""
        ptr = self.lib.llama_get_logits_ith(ctx, idx)
        if not ptr:
            raise RuntimeError(f"llama.cpp has no logits for output {idx}")
        return np.frombuffer(self._raw.from_address(ctypes.addressof(ptr.contents)), dtype=np.float32)

    def load(self, logits: np.ndarray) -> None:
        """Every token with its logit, in id order (samplers reorder the array: the ids
        and p = 0 come back from the template in one memmove)."""
        ctypes.memmove(self._buf, self._template, ctypes.sizeof(self._buf))
        np.copyto(self.view["logit"], logits)
        self.resize(self.n_vocab)

    def head(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Only the tokens `ids`, with their logits, at the front of the array."""
        n = len(ids)
        head = self.view[:n]
        head["id"] = ids
        head["logit"] = logits[ids]
        head["p"] = 0.0
        self.resize(n)
        return head

    def resize(self, size: int) -> None:
        a = self.array
        a.size, a.selected, a.sorted = size, -1, False

    def picked(self) -> int:
        a = self.array
        return int(a.data[a.selected].id)

    def allows(self, grammar: Any, token: int) -> bool:
        """Whether `grammar`, in its current state, accepts `token` next."""
        one = self._one
        one.id, one.logit = token, 1.0
        self._one_array.selected = -1
        self.lib.llama_sampler_apply(grammar, self._one_ref)
        return not math.isinf(one.logit)


def _array(lib: Any, buf: Any, size: int) -> Any:
    data = ctypes.cast(buf, ctypes.POINTER(lib.llama_token_data))
    return lib.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)


class SamplerStats:
    """What the grammar cost one sequence: refused picks, and how each was resolved."""

    __slots__ = ("full_pass", "narrowed", "refused")

    def __init__(self) -> None:
        self.refused = 0  # picks the grammar refused
        self.narrowed = 0  # resolved over the best candidates only
        self.full_pass = 0  # resolved by the grammar over the whole vocabulary


class SeqSampler:
    """The sampler of one sequence: an ordinary chain plus an optional grammar."""

    def __init__(
        self,
        lib: Any,
        model: Any,  # LlamaModel
        candidates: Candidates,
        sampling: SamplingConfig,
        *,
        seed: int,
        gbnf: str | None = None,
        ignore_eos: bool = False,
    ) -> None:
        self.lib = lib
        self._cands = candidates
        self.sampling = sampling
        self.stats = SamplerStats()
        self.grammar: Any = None
        self.pre: Any = None  # logit bias and repeat penalty: applied to the few tokens they touch
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self._stages: list[Any] = []  # the chain's samplers, in order (owned by the chain)
        self._greedy = sampling.temperature <= 0
        self._fixed: tuple[int, ...] = ()  # tokens with a logit bias
        self._recent: deque[int] | None = None  # the penalty's window, as llama.cpp keeps it
        self._counts: dict[int, int] = {}
        try:
            if gbnf is not None:
                self.grammar = lib.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
                if not self.grammar:
                    raise ValueError("llama.cpp rejected the grammar made from the JSON schema")
            self._build(model, sampling, seed, ignore_eos)
        except BaseException:
            self.free()
            raise
        self._touched = np.array(self._fixed, dtype=np.intp)
        cap = len(self._fixed) + (_PENALTY_LAST_N if self._recent is not None else 0)
        self._touch_buf = (lib.llama_token_data * max(cap, 1))()
        self._touch_view = np.frombuffer(self._touch_buf, dtype=_TOKEN_DATA)
        self._touch_array = _array(lib, self._touch_buf, 0)
        self._touch_ref = ctypes.byref(self._touch_array)
        self._touch_saved = np.empty(max(cap, 1), dtype=np.float32)  # their logits before

    def _build(self, model: Any, s: SamplingConfig, seed: int, ignore_eos: bool) -> None:
        lib = self.lib

        def add(chain: Any, smpl: Any, what: str) -> None:
            if not smpl:
                raise ValueError(f"llama.cpp rejected the {what}")
            lib.llama_sampler_chain_add(chain, smpl)
            if chain is self.chain:
                self._stages.append(smpl)

        if ignore_eos or s.repeat_penalty != 1.0:
            self.pre = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if ignore_eos:  # benchmarks: exactly max_tokens tokens
            eog = sorted(model.eog_tokens)
            arr = (lib.llama_logit_bias * len(eog))(
                *(lib.llama_logit_bias(token=t, bias=float("-inf")) for t in eog)
            )
            add(self.pre, lib.llama_sampler_init_logit_bias(model.n_vocab, len(eog), arr), "logit bias")
            self._fixed = tuple(eog)
        if s.repeat_penalty != 1.0:
            add(
                self.pre,
                lib.llama_sampler_init_penalties(model.n_vocab, _PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0),
                "repeat penalty",
            )
            self._recent = deque(maxlen=_PENALTY_LAST_N)
        if s.temperature <= 0:
            add(self.chain, lib.llama_sampler_init_greedy(), "greedy sampler")
            return
        add(self.chain, lib.llama_sampler_init_top_k(s.top_k), "top_k")
        add(self.chain, lib.llama_sampler_init_top_p(s.top_p, 1), "top_p")
        add(self.chain, lib.llama_sampler_init_min_p(s.min_p, 1), "min_p")
        add(self.chain, lib.llama_sampler_init_temp(s.temperature), "temperature")
        add(self.chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF), "sampler")

    # -- picking --

    def sample(self, ctx: Any, idx: int) -> int:
        """Pick the next token from output `idx` of the last decode, and accept it."""
        logits = self._cands.logits(ctx, idx)
        touched = self._penalize(logits)
        try:
            # The chain's samplers keep no state on accept (the penalty's window is in
            # `pre`), so the one llama_sampler_sample accepts a pick the grammar refuses.
            token = int(self.lib.llama_sampler_sample(self.chain, ctx, idx))
            if self.grammar is not None and not self._cands.allows(self.grammar, token):
                self.stats.refused += 1
                token = self._constrained(logits)
        finally:
            if touched:  # llama.cpp's logits as they were: nothing else sees the penalty
                logits[self._touched] = self._touch_saved[:touched]
        self._accept(token)
        return token

    def _penalize(self, logits: np.ndarray) -> int:
        """Bias and penalty, applied by llama.cpp to just the tokens they touch, written
        into llama.cpp's logits (put back after the pick). Returns how many."""
        ids = self._touched
        n = len(ids)
        if not n:
            return 0
        touched = self._touch_view[:n]
        touched["id"] = ids
        touched["logit"] = logits[ids]
        self._touch_saved[:n] = touched["logit"]
        a = self._touch_array
        a.size, a.selected, a.sorted = n, -1, False
        self.lib.llama_sampler_apply(self.pre, self._touch_ref)
        logits[ids] = touched["logit"]
        return n

    def _constrained(self, logits: np.ndarray) -> int:
        """The pick the grammar allows: over the best candidates when that is provably the
        same as over the whole vocabulary, else over the whole vocabulary."""
        cands = self._cands
        lib = self.lib
        n_vocab = cands.n_vocab
        for n in _NARROW:
            if n >= n_vocab:
                break
            # One partial sort per stage (numpy's with several kth is far slower): the
            # n best, in no order, and at n_vocab - n the n-th best.
            order = np.argpartition(logits, n_vocab - n)
            token = self._narrowed(logits, order[n_vocab - n:], float(logits[order[n_vocab - n]]))
            if token is not None:
                self.stats.narrowed += 1
                return token
        self.stats.full_pass += 1
        cands.load(logits)
        lib.llama_sampler_apply(self.grammar, cands.ref)
        lib.llama_sampler_apply(self.chain, cands.ref)
        return cands.picked()

    def _narrowed(self, logits: np.ndarray, ids: np.ndarray, floor: float) -> int | None:
        """Run the grammar over the tokens `ids` only, the best by logit (bias and penalty
        applied), and pick among them, when that is the pick the grammar over the whole
        vocabulary and then the chain would make; else None.

        Every token left out has a logit <= `floor`. Exact when:
        - greedy: the best allowed logit is above floor; ties go to the lowest id, as
          llama.cpp's greedy over the id-ordered vocabulary does;
        - top-k: the k best allowed tokens are all above floor: the chain then sees the
          same k tokens it would have seen;
        - min-p: fewer than k are allowed here, none left out can reach min-p's cut
          (best + ln min_p), and every allowed token above the cut survives top-p here.
          Over everything, top-p would normalise over more tokens (each p smaller), so it
          could only keep more, and min-p removes those below the cut: the same tokens.
        Exact up to float32 rounding at top-p's boundary and the order of equal logits."""
        cands = self._cands
        lib = self.lib
        head = cands.head(ids, logits)
        lib.llama_sampler_apply(self.grammar, cands.ref)
        scores = head["logit"]
        allowed = scores > -np.inf
        valid = scores[allowed]
        if not valid.size:
            return None
        best = float(valid.max())
        if best <= floor:  # a token left out might tie with it
            return None
        if self._greedy:
            return int(ids[allowed & (scores == valid.max())].min())
        s = self.sampling
        k = s.top_k
        if 0 < k <= valid.size:
            if float(np.partition(valid, valid.size - k)[valid.size - k]) <= floor:
                return None
            lib.llama_sampler_apply(self.chain, cands.ref)
            return cands.picked()
        if s.min_p <= 0:
            return None
        cut = best + math.log(s.min_p)
        if floor >= cut - _EPS:
            return None
        above = int(np.count_nonzero(valid >= cut - _EPS))
        top_k, top_p, min_p, temp, dist = self._stages
        for stage in (top_k, top_p, min_p):
            lib.llama_sampler_apply(stage, cands.ref)
        if cands.array.size != above:  # top-p cut an allowed token that min-p would keep
            return None
        lib.llama_sampler_apply(temp, cands.ref)
        lib.llama_sampler_apply(dist, cands.ref)
        return cands.picked()

    def _accept(self, token: int) -> None:
        lib = self.lib
        if self.grammar is not None:
            lib.llama_sampler_accept(self.grammar, token)
        if self.pre is not None:
            lib.llama_sampler_accept(self.pre, token)
        recent = self._recent
        if recent is None:
            return
        counts = self._counts
        changed = False
        if len(recent) == recent.maxlen:  # the oldest leaves the window, as in llama.cpp
            old = recent[0]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
                changed = True
        recent.append(token)
        if token in counts:
            counts[token] += 1
        else:
            counts[token] = 1
            changed = True
        if changed:
            self._touched = np.fromiter({*self._fixed, *counts}, dtype=np.intp)

    def free(self) -> None:
        lib = self.lib
        for smpl in (self.chain, self.pre, self.grammar):
            if smpl:
                lib.llama_sampler_free(smpl)
        self.chain = self.pre = self.grammar = None
        self._stages = []
