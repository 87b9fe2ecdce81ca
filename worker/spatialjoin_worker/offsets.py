"""Which offsets may be committed: only those below which every task is finished.

Tasks of one Kafka partition can finish out of order when the worker runs
several at once; committing a later offset first would lose an earlier,
unfinished task on a crash. So each partition commits the lowest offset not
yet finished (Kafka's "next offset to read").
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass
class PartitionOffsets:
    """Offsets handed out and finished on one partition."""

    in_flight: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    committed: int | None = None
    highest_seen: int = -1

    def commit_point(self) -> int | None:
        """The offset to commit (next to read), or None when nothing new is safe."""
        if self.highest_seen < 0:
            return None
        point = min(self.in_flight) if self.in_flight else self.highest_seen + 1
        if self.committed is not None and point <= self.committed:
            return None
        return point


@dataclass
class OffsetTracker:
    """Per-partition bookkeeping shared by the poll loop and the task threads."""

    partitions: dict[TopicPartition, PartitionOffsets] = field(default_factory=dict)

    def started(self, tp: TopicPartition, offset: int) -> None:
        state = self.partitions.setdefault(tp, PartitionOffsets())
        state.in_flight.add(offset)
        state.highest_seen = max(state.highest_seen, offset)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        state = self.partitions.setdefault(tp, PartitionOffsets())
        state.in_flight.discard(offset)
        state.finished.add(offset)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Every partition's new commit point."""
        points = {}
        for tp, state in self.partitions.items():
            point = state.commit_point()
            if point is not None:
                points[tp] = point
        return points

    def committed(self, points: dict[TopicPartition, int]) -> None:
        for tp, point in points.items():
            state = self.partitions.get(tp)
            if state is not None:
                state.committed = point
                state.finished = {o for o in state.finished if o >= point}

    def forget(self, tps: list[TopicPartition]) -> None:
        """Partitions revoked from this worker."""
        for tp in tps:
            self.partitions.pop(tp, None)

    def in_flight(self, tp: TopicPartition | None = None) -> int:
        if tp is not None:
            state = self.partitions.get(tp)
            return len(state.in_flight) if state else 0
        return sum(len(s.in_flight) for s in self.partitions.values())
