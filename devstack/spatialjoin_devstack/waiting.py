"""Wait on a condition with a deadline: the only way tests and the stack synchronize."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The awaited condition did not hold before the deadline."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> T:
    """Poll ``probe`` until it returns a truthy value, and return that value.

    Exceptions raised by the probe count as "not yet" so that a server that
    is still starting can refuse connections; the last one is chained to the
    timeout error to explain what was wrong.
    """
    deadline = clock() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # a not-yet-ready service raises; keep polling
            last_error = exc
        else:
            if value:
                return value
        if clock() >= deadline:
            detail = f": last error {last_error!r}" if last_error else ""
            raise DeadlineExceeded(f"{what} not met within {timeout:.1f}s{detail}") from last_error
        pause(interval)
