"""wait_for: returns the probe's value, tolerates errors, and honours the deadline."""

from __future__ import annotations

import pytest

from spatialjoin_devstack.waiting import DeadlineExceeded, wait_for

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("answers", "expected", "pauses"),
    [
        ([3], 3, 0),
        ([None, 0, "ready"], "ready", 2),
        ([ConnectionError("refused"), True], True, 1),
    ],
)
def test_returns_first_truthy_value(answers: list[object], expected: object, pauses: int) -> None:
    clock = FakeClock()
    remaining = list(answers)

    def probe() -> object:
        answer = remaining.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    waited: list[float] = []
    result = wait_for(probe, timeout=10, interval=1, clock=clock,
                      pause=lambda s: (waited.append(s), clock.advance(s)))
    assert result == expected
    assert len(waited) == pauses


def test_deadline_names_the_condition_and_the_last_error() -> None:
    clock = FakeClock()

    def probe() -> None:
        raise ConnectionRefusedError("port 1")

    with pytest.raises(DeadlineExceeded, match=r"broker up not met within 2\.0s.*port 1"):
        wait_for(probe, timeout=2, interval=0.5, what="broker up", clock=clock,
                 pause=clock.advance)
    assert clock.now == pytest.approx(2.0)
