"""Per-sequence token samplers (llama.cpp sampler chains). Engine thread only.

A grammar (from a JSON schema) is checked the way llama.cpp's own common sampler does it:
sample with the ordinary chain first, then ask the grammar about that one token, and only
when it is refused run the grammar over the whole vocabulary and sample again. Running the
grammar over ~50k candidates costs milliseconds per token, more than a GPU decode step, and
most picks are already valid.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from agents.config import SamplingConfig

_PENALTY_LAST_N = 64  # repeat penalty looks this many tokens back


class Candidates:
    """One reusable candidate array over the vocabulary (the engine thread samples serially)."""

    def __init__(self, lib: Any, n_vocab: int) -> None:
        self.lib = lib
        self.n_vocab = n_vocab
        self._buf = (lib.llama_token_data * n_vocab)()
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        assert dtype.itemsize == ctypes.sizeof(lib.llama_token_data)
        self._view = np.frombuffer(self._buf, dtype=dtype)
        self._view["id"] = np.arange(n_vocab, dtype=np.int32)
        self._one = (lib.llama_token_data * 1)()

    def full(self, ctx: Any, idx: int) -> Any:
        """Every token with its logit from output `idx` of the last decode."""
        ptr = self.lib.llama_get_logits_ith(ctx, idx)
        self._view["id"] = np.arange(self.n_vocab, dtype=np.int32)  # samplers reorder data
        self._view["logit"] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        self._view["p"] = 0.0
        data = ctypes.cast(self._buf, ctypes.POINTER(self.lib.llama_token_data))
        return self.lib.llama_token_data_array(data=data, size=self.n_vocab, selected=-1, sorted=False)

    def single(self, token: int) -> Any:
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, 1.0, 0.0
        data = ctypes.cast(one, ctypes.POINTER(self.lib.llama_token_data))
        return self.lib.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)


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
        self.grammar: Any = None
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        try:
            if gbnf is not None:
                self.grammar = lib.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
                if not self.grammar:
                    raise ValueError("llama.cpp rejected the grammar made from the JSON schema")
            self._build(model, sampling, seed, ignore_eos)
        except BaseException:
            self.free()
            raise

    def _build(self, model: Any, s: SamplingConfig, seed: int, ignore_eos: bool) -> None:
        lib = self.lib

        def add(smpl: Any, what: str) -> None:
            if not smpl:
                raise ValueError(f"llama.cpp rejected the {what}")
            lib.llama_sampler_chain_add(self.chain, smpl)

        if ignore_eos:  # benchmarks: exactly max_tokens tokens
            eog = sorted(model.eog_tokens)
            arr = (lib.llama_logit_bias * len(eog))(
                *(lib.llama_logit_bias(token=t, bias=float("-inf")) for t in eog)
            )
            add(lib.llama_sampler_init_logit_bias(model.n_vocab, len(eog), arr), "logit bias")
        if s.repeat_penalty != 1.0:
            add(
                lib.llama_sampler_init_penalties(model.n_vocab, _PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0),
                "repeat penalty",
            )
        if s.temperature <= 0:
            add(lib.llama_sampler_init_greedy(), "greedy sampler")
            return
        add(lib.llama_sampler_init_top_k(s.top_k), "top_k")
        add(lib.llama_sampler_init_top_p(s.top_p, 1), "top_p")
        add(lib.llama_sampler_init_min_p(s.min_p, 1), "min_p")
        add(lib.llama_sampler_init_temp(s.temperature), "temperature")
        add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF), "sampler")

    def sample(self, ctx: Any, idx: int) -> int:
        """Pick the next token from output `idx` of the last decode, and accept it."""
        lib = self.lib
        if self.grammar is None:
            return int(lib.llama_sampler_sample(self.chain, ctx, idx))  # samples and accepts
        cur = self._cands.full(ctx, idx)
        lib.llama_sampler_apply(self.chain, ctypes.byref(cur))
        token = int(cur.data[cur.selected].id)
        probe = self._cands.single(token)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(probe))
        if math.isinf(probe.data[0].logit):  # the grammar refuses it: constrain, then sample
            cur = self._cands.full(ctx, idx)
            lib.llama_sampler_apply(self.grammar, ctypes.byref(cur))
            lib.llama_sampler_apply(self.chain, ctypes.byref(cur))
            token = int(cur.data[cur.selected].id)
        lib.llama_sampler_accept(self.grammar, token)
        lib.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        if self.chain:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar:
            self.lib.llama_sampler_free(self.grammar)
            self.grammar = None
