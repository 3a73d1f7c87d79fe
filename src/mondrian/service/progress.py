"""A running job's `progress`: tokens against the critique length to expect, not the budget.

The token budget (`Backend.answer_budget`) is the worst case, the longest answer the
grammar admits: real answers are a fraction of it, so progress by the budget crawled to a
third and jumped to 1. Here the expected length is the median token count of the service's
recent jobs of the same mode (rag's two passes count together), and before the first job
finishes, half the budget. The value rises in proportion to that up to `LINEAR_UNTIL` of
it, then ever more slowly toward `MAX_RUNNING` (an answer longer than usual still moves),
and only the job's end writes 1.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque

# Progress never reads 1.0 before the job is done: the last write is finish_job's.
MAX_RUNNING = 0.99
LINEAR_UNTIL = 0.8  # share of the expected length shown as it is; past it, the slow tail
RECENT = 32  # finished jobs per mode the median is taken over
PRIOR_SHARE = 0.5  # the expected length before any job finished: this share of the budget


def progress_value(tokens: int, expected: int) -> float:
    """0..MAX_RUNNING for `tokens` generated of `expected`: linear, then an exponential tail
    (continuous, with the same slope where they meet), so it never stalls nor reaches 1."""
    ratio = max(0, tokens) / max(1, expected)
    if ratio <= LINEAR_UNTIL:
        shown = ratio
    else:
        rest = 1.0 - LINEAR_UNTIL
        shown = LINEAR_UNTIL + rest * (1.0 - math.exp(-(ratio - LINEAR_UNTIL) / rest))
    return min(MAX_RUNNING, shown * MAX_RUNNING)


class ExpectedTokens:
    """The median token count of recent finished jobs, per mode; thread-safe."""

    def __init__(self, budget: int) -> None:
        self.prior = max(1, int(budget * PRIOR_SHARE))
        self._recent: dict[str, deque[int]] = {}
        self._lock = threading.Lock()

    def for_mode(self, mode: str) -> int:
        with self._lock:
            counts = self._recent.get(mode)
            return max(1, int(statistics.median(counts))) if counts else self.prior

    def record(self, mode: str, tokens: int) -> None:
        if tokens <= 0:
            return  # a job that generated nothing (a backend without token callbacks)
        with self._lock:
            self._recent.setdefault(mode, deque(maxlen=RECENT)).append(tokens)
