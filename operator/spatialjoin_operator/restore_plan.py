"""Pure decisions of a restore: what one result object in storage means for the tables.

A result object is trusted when its key, its footer and its bytes agree:
the key is ``…/{traceId}/{partition}.parquet``, the footer's
``spatialjoin.trace_id`` / ``partition_key`` name the same, its
``row_count`` equals the rows the footer's row groups hold, the footer
passes the contract validator, and its SHA-256 (of the whole object, as the
worker computes it) equals every checksum still on record (a surviving
spatial_join_results row, the job's ``status.results[].sha256``). Then:

* no result row         → restore it, and mark the partition done;
* the same result row   → nothing to insert; mark done if the row is not;
* a different checksum  → inconsistent: reported, never overwritten.

A cancelled partition gets its result row back but stays cancelled, as the
worker's own write would have left it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from spatialjoin_contracts.ddl import TaskStatus
from spatialjoin_contracts.models import ContractVersion
from spatialjoin_contracts.result_schema import (
    KEY_CONTRACT,
    KEY_PARTITION_KEY,
    KEY_ROW_COUNT,
    KEY_TRACE_ID,
)

RESULT_SUFFIX: Final = ".parquet"
REQUIRED_KEYS: Final = (KEY_CONTRACT, KEY_TRACE_ID, KEY_PARTITION_KEY, KEY_ROW_COUNT)


class Action(StrEnum):
    RESTORE = "restore"
    """Insert the result row (and mark the partition done)."""
    MARK_DONE = "mark-done"
    """The result row is there and matches; only the partition's status is behind."""
    SKIP = "skip"
    """Already recorded, identically."""
    INCONSISTENT = "inconsistent"
    """Key, footer, bytes and records disagree: reported, nothing written."""
    IGNORE = "ignore"
    """Not a result object (another suffix)."""


@dataclass(frozen=True)
class ObjectFacts:
    """What reading one object gave."""

    uri: str
    size: int
    sha256: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The footer's key-value metadata, decoded."""
    footer_rows: int | None = None
    """Sum of the row groups' rows, from the footer."""
    deviations: tuple[str, ...] = ()
    """Contract validator deviations."""
    error: str | None = None
    """Why the object could not be read, hashed or parsed."""


@dataclass(frozen=True)
class RecordedResult:
    """A spatial_join_results row still present."""

    uri: str | None
    sha256: str
    rows: int


@dataclass(frozen=True)
class Decision:
    uri: str
    action: Action
    reason: str
    trace_id: str | None = None
    partition: str | None = None
    contract: str | None = None
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    mark_done: bool = False
    """Also move the partition's spatial_async_jobs row to done."""


def key_parts(uri: str) -> tuple[str, str] | None:
    """``s3://b/prefix/TRACE/PART.parquet`` → (TRACE, PART); None for other keys."""
    path = uri.removeprefix("s3://")
    parts = path.split("/")
    if len(parts) < 3 or not parts[-1].endswith(RESULT_SUFFIX):
        return None
    partition = parts[-1][: -len(RESULT_SUFFIX)]
    return (parts[-2], partition) if partition and parts[-2] else None


def decide(obj: ObjectFacts, recorded: RecordedResult | None, row_status: str | None,
           references: Sequence[tuple[str, str]] = ()) -> Decision:
    """What to do with one object. ``references`` are (where, sha256) checksums on record
    elsewhere (the job's status.results); ``row_status`` is its spatial_async_jobs status."""
    parts = key_parts(obj.uri)
    if parts is None:
        return Decision(obj.uri, Action.IGNORE, "not a result object (…/TRACE/PARTITION.parquet)")
    trace, partition = parts

    def inconsistent(reason: str) -> Decision:
        return Decision(obj.uri, Action.INCONSISTENT, reason, trace, partition,
                        bytes=obj.size, sha256=obj.sha256)

    if obj.error is not None or obj.sha256 is None:
        return inconsistent(f"unreadable: {obj.error or 'no checksum'}")
    missing = [key for key in REQUIRED_KEYS if key not in obj.metadata]
    if missing:
        return inconsistent(f"footer metadata lacks {', '.join(missing)}")
    meta = obj.metadata
    if (meta[KEY_TRACE_ID], meta[KEY_PARTITION_KEY]) != (trace, partition):
        return inconsistent(f"footer names traceId {meta[KEY_TRACE_ID]!r} partition "
                            f"{meta[KEY_PARTITION_KEY]!r}, the key {trace!r} {partition!r}")
    try:
        rows = int(meta[KEY_ROW_COUNT])
        contract = ContractVersion(meta[KEY_CONTRACT]).value
    except ValueError as exc:
        return inconsistent(f"footer metadata invalid: {exc}")
    if obj.footer_rows is not None and obj.footer_rows != rows:
        return inconsistent(f"footer row_count {rows} but its row groups hold {obj.footer_rows}")
    if obj.deviations:
        return inconsistent(f"deviates from contract {contract}: {'; '.join(obj.deviations)}")
    for where, sha in references:
        if sha != obj.sha256:
            return inconsistent(f"checksum mismatch: the object's sha256 is {obj.sha256}, "
                                f"{where} records {sha}")
    decided = Decision(obj.uri, Action.RESTORE, "restored from the object's footer", trace,
                       partition, contract, rows, obj.size, obj.sha256,
                       mark_done=row_status != TaskStatus.CANCELLED.value)
    if recorded is None:
        return decided
    if recorded.sha256 != obj.sha256:
        return inconsistent(f"checksum mismatch: the object's sha256 is {obj.sha256}, "
                            f"spatial_join_results records {recorded.sha256}")
    if row_status not in (TaskStatus.DONE.value, TaskStatus.CANCELLED.value):
        return Decision(obj.uri, Action.MARK_DONE,
                        f"result row present; partition was {row_status or 'unregistered'}",
                        trace, partition, contract, rows, obj.size, obj.sha256, mark_done=True)
    return Decision(obj.uri, Action.SKIP, "already recorded with the same checksum", trace,
                    partition, contract, rows, obj.size, obj.sha256)


@dataclass(frozen=True)
class LostPartition:
    trace_id: str
    partition: str
    job_id: str


def lost_partitions(done_without_result: Sequence[tuple[str, str, str]],
                    restorable: set[tuple[str, str]]) -> list[LostPartition]:
    """Of the (trace, partition, job_id) rows marked done without a result row, those no
    trusted object restores either: their result is nowhere."""
    return [LostPartition(trace, part, job) for trace, part, job in done_without_result
            if (trace, part) not in restorable]


@dataclass
class RestoreReport:
    """What a restore did, per object."""

    source: str
    decisions: list[Decision] = field(default_factory=list)
    lost: list[LostPartition] = field(default_factory=list)
    requeued: list[LostPartition] = field(default_factory=list)
    tables_recreated: list[str] = field(default_factory=list)
    dry_run: bool = False
    paused_pools: list[str] = field(default_factory=list)

    def by_action(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action is action]

    @property
    def consistent(self) -> bool:
        return not self.by_action(Action.INCONSISTENT) and not (
            set((p.trace_id, p.partition) for p in self.lost)
            - set((p.trace_id, p.partition) for p in self.requeued))

    def summary(self) -> dict[str, int]:
        counts = {action.value: len(self.by_action(action)) for action in Action}
        counts["lost"] = len(self.lost)
        counts["requeued"] = len(self.requeued)
        return counts

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source, "dryRun": self.dry_run, "summary": self.summary(),
            "tablesRecreated": self.tables_recreated, "pausedPools": self.paused_pools,
            "consistent": self.consistent,
            "objects": [{"uri": d.uri, "action": d.action.value, "reason": d.reason,
                         "traceId": d.trace_id, "partition": d.partition,
                         "contract": d.contract, "rows": d.rows, "bytes": d.bytes,
                         "sha256": d.sha256} for d in self.decisions],
            "lost": [{"traceId": p.trace_id, "partition": p.partition, "jobId": p.job_id,
                      "requeued": p in self.requeued} for p in self.lost],
        }
