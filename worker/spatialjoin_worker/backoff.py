"""Retry decisions for transient failures: exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before trying a failed step again."""

    max_retries: int = 3
    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): full jitter of 2^(n-1)·base.

        Full jitter spreads the retries of workers that failed together
        (a database restart) instead of having them return in lockstep.
        """
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry}")
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2 ** (retry - 1))
        return float(ceiling * rand())

    def should_retry(self, retry: int) -> bool:
        """True while retry number ``retry`` (1-based) is within the budget."""
        return retry <= self.max_retries
