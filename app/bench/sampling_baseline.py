"""The former sampling algorithm, kept verbatim: `bench sampling` times it as its `before`
side against the engine's SeqSampler, and tests/test_inference_sampling.py uses it as the
oracle the narrowed grammar route must agree with. One copy, here, for both: app/ cannot
import from tests/.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from agents.config import SamplingConfig
from agents.inference.sampling import _PENALTY_LAST_N, SamplerStats


class FullPassCandidates:
    """The former candidate array: ids, logits and p rewritten over the whole vocabulary
    on every call (np.arange included)."""

    def __init__(self, lib: Any, n_vocab: int) -> None:
        self.lib = lib
        self.n_vocab = n_vocab
        self._buf = (lib.llama_token_data * n_vocab)()
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self._view = np.frombuffer(self._buf, dtype=dtype)
        self._one = (lib.llama_token_data * 1)()

    def full(self, ctx: Any, idx: int) -> Any:
        ptr = self.lib.llama_get_logits_ith(ctx, idx)
        self._view["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._view["logit"] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        self._view["p"] = 0.0
        data = ctypes.cast(self._buf, ctypes.POINTER(self.lib.llama_token_data))
        return self.lib.llama_token_data_array(data=data, size=self.n_vocab, selected=-1, sorted=False)

    def single(self, token: int) -> Any:
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, 1.0, 0.0
        data = ctypes.cast(one, ctypes.POINTER(self.lib.llama_token_data))
        return self.lib.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)


class FullPassSampler:
    """The former SeqSampler: the chain over a fresh copy of the vocabulary per token, the
    pick checked by the grammar, and on a refusal another copy, the grammar over all of it
    and the chain again. The same chain as SeqSampler's (penalties and bias included)."""

    def __init__(self, lib: Any, model: Any, candidates: FullPassCandidates, sampling: SamplingConfig, *,
                 seed: int, gbnf: str | None = None, ignore_eos: bool = False) -> None:
        self.lib = lib
        self._cands = candidates
        self.stats = SamplerStats()
        self.grammar: Any = None
        if gbnf is not None:
            self.grammar = lib.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        s = sampling

        def add(smpl: Any) -> None:
            lib.llama_sampler_chain_add(self.chain, smpl)

        if ignore_eos:
            eog = sorted(model.eog_tokens)
            arr = (lib.llama_logit_bias * len(eog))(
                *(lib.llama_logit_bias(token=t, bias=float("-inf")) for t in eog)
            )
            add(lib.llama_sampler_init_logit_bias(model.n_vocab, len(eog), arr))
        if s.repeat_penalty != 1.0:
            add(lib.llama_sampler_init_penalties(model.n_vocab, _PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0))
        if s.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return
        add(lib.llama_sampler_init_top_k(s.top_k))
        add(lib.llama_sampler_init_top_p(s.top_p, 1))
        add(lib.llama_sampler_init_min_p(s.min_p, 1))
        add(lib.llama_sampler_init_temp(s.temperature))
        add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Any, idx: int) -> int:
        lib = self.lib
        if self.grammar is None:
            return int(lib.llama_sampler_sample(self.chain, ctx, idx))  # samples and accepts
        cur = self._cands.full(ctx, idx)
        lib.llama_sampler_apply(self.chain, ctypes.byref(cur))
        token = int(cur.data[cur.selected].id)
        probe = self._cands.single(token)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(probe))
        if math.isinf(probe.data[0].logit):  # the grammar refuses it: constrain, then sample
            self.stats.refused += 1
            self.stats.full_pass += 1
            cur = self._cands.full(ctx, idx)
            lib.llama_sampler_apply(self.grammar, ctypes.byref(cur))
            lib.llama_sampler_apply(self.chain, ctypes.byref(cur))
            token = int(cur.data[cur.selected].id)
        lib.llama_sampler_accept(self.grammar, token)
        lib.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        for smpl in (self.chain, self.grammar):
            if smpl:
                self.lib.llama_sampler_free(smpl)
        self.chain = self.grammar = None
