"""Exponential backoff with full jitter, and the retry budget."""

from __future__ import annotations

import pytest

from spatialjoin_worker.backoff import RetryPolicy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("retry", "rand", "expected"),
    [
        (1, 1.0, 0.5),
        (2, 1.0, 1.0),
        (3, 1.0, 2.0),
        (3, 0.5, 1.0),
        (6, 1.0, 10.0),  # 16 s capped at 10 s
        (2, 0.0, 0.0),
    ],
)
def test_delay_doubles_with_jitter_and_cap(retry: int, rand: float, expected: float) -> None:
    policy = RetryPolicy(max_retries=3, initial_delay_s=0.5, max_delay_s=10.0)
    assert policy.delay(retry, rand=lambda: rand) == pytest.approx(expected)


@pytest.mark.parametrize(("retry", "allowed"), [(1, True), (3, True), (4, False)])
def test_budget(retry: int, allowed: bool) -> None:
    assert RetryPolicy(max_retries=3).should_retry(retry) is allowed


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="retry must be >= 1"):
        RetryPolicy().delay(0)
