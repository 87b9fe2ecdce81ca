"""Only offsets below every unfinished task are committed."""

from __future__ import annotations

import pytest

from spatialjoin_worker.offsets import OffsetTracker

pytestmark = pytest.mark.unit

TP = ("tasks", 3)


@pytest.mark.parametrize(
    ("started", "finished", "expected"),
    [
        ([], [], None),
        ([5], [], 5),  # nothing finished: the commit point stays at the first unfinished
        ([5], [5], 6),
        ([5, 6, 7], [6, 7], 5),  # out-of-order finish keeps 5 uncommitted
        ([5, 6, 7], [5, 7], 6),
        ([5, 6, 7], [5, 6, 7], 8),
    ],
)
def test_commit_point(started: list[int], finished: list[int], expected: int | None) -> None:
    tracker = OffsetTracker()
    for offset in started:
        tracker.started(TP, offset)
    for offset in finished:
        tracker.finished(TP, offset)
    assert tracker.to_commit().get(TP) == expected


def test_nothing_new_after_a_commit() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 0)
    tracker.finished(TP, 0)
    tracker.committed(tracker.to_commit())
    assert tracker.to_commit() == {}
    tracker.started(TP, 1)
    tracker.finished(TP, 1)
    assert tracker.to_commit() == {TP: 2}


def test_partitions_are_independent_and_forgettable() -> None:
    tracker = OffsetTracker()
    other = ("tasks", 4)
    tracker.started(TP, 10)
    tracker.started(other, 20)
    tracker.finished(other, 20)
    assert tracker.to_commit() == {TP: 10, other: 21}
    assert tracker.in_flight() == 1
    tracker.forget([TP])
    assert tracker.to_commit() == {other: 21}
    assert tracker.in_flight(TP) == 0
