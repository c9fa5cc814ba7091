"""How many prompt tokens each step may carry, and how they are shared. Pure; no llama.cpp.

A long prompt fed in one go stalls every generating sequence for the whole prefill (the
audit saw inter-token gaps go from 7.5 ms to 2.3 s). So while others generate, a step
carries at most a budget of prompt tokens (chunked prefill, as vLLM and llama.cpp's server
do), and that budget is shared fairly: higher priorities first, then equal shares within a
priority, so four long prompts advance together instead of queueing one after another.
"""

from __future__ import annotations

from collections.abc import Sequence

# Before any step has been timed: prompt tokens per step beside generating sequences.
DEFAULT_BUDGET = 64
MIN_BUDGET = 8  # never starve a prompt entirely, however slow prompt tokens look
_EWMA = 0.2  # weight of the newest step in the running step-time estimates
_MIN_SAMPLE = 8  # prompt tokens a step must carry before its time says anything per token


class PrefillBudget:
    """Prompt tokens per step while sequences generate.

    `fixed` > 0: that many. `fixed` == 0 (automatic): as many as keep a step that carries
    them within `ratio` × (one generation-only step) of extra time, measured as the engine
    runs — a handful on a small CPU, the whole batch on a GPU where prompt tokens are cheap.
    """

    def __init__(self, n_batch: int, fixed: int = 0, ratio: float = 1.0) -> None:
        self.n_batch = n_batch
        self.fixed = fixed
        self.ratio = ratio
        self.gen_step_s: float | None = None  # a step with generating sequences only
        self.prompt_token_s: float | None = None  # extra time per prompt token in a step

    def tokens(self, generating: bool) -> int:
        if not generating:  # nobody waits on this step: fill the batch
            return self.n_batch
        if self.fixed:
            return min(self.fixed, self.n_batch)
        if self.gen_step_s is None or not self.prompt_token_s:
            return min(DEFAULT_BUDGET, self.n_batch)
        budget = int(self.ratio * self.gen_step_s / self.prompt_token_s)
        return max(MIN_BUDGET, min(self.n_batch, budget))

    def observe(self, seconds: float, generated: int, prompt: int) -> None:
        """Learn from one decode: `generated` one-token rows, `prompt` prompt tokens."""
        if prompt == 0:
            if generated:
                self.gen_step_s = _mix(self.gen_step_s, seconds)
            return
        if prompt < _MIN_SAMPLE:
            return
        base = self.gen_step_s if generated and self.gen_step_s is not None else 0.0
        self.prompt_token_s = _mix(self.prompt_token_s, max(seconds - base, 0.0) / prompt)


def _mix(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EWMA) * old + _EWMA * new


def share_prefill(budget: int, wants: Sequence[tuple[int, int]]) -> list[int]:
    """Split `budget` prompt tokens among prefilling sequences, given as (priority, tokens
    wanted). Higher priorities are served first; within a priority the tokens are
    water-filled (equal shares; what a short prompt does not need goes to the others).
    Returns tokens per sequence, in order."""
    given = [0] * len(wants)
    left = budget
    for priority in sorted({p for p, _ in wants}, reverse=True):
        # Water-filling: the smallest wants first, each taking at most an equal share of
        # what is left, so what a short prompt does not need goes to the longer ones.
        group = sorted((w, i) for i, (p, w) in enumerate(wants) if p == priority)
        for k, (want, i) in enumerate(group):
            given[i] = min(want, left // (len(group) - k))
            left -= given[i]
        if left == 0:
            break
    return given
