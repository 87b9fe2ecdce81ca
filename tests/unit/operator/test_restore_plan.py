"""The restore's pure decisions, table-driven: object facts + records → action and reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from spatialjoin_operator.restore_plan import (
    Action,
    Decision,
    LostPartition,
    ObjectFacts,
    RecordedResult,
    RestoreReport,
    decide,
    key_parts,
    lost_partitions,
)

pytestmark = pytest.mark.unit

URI = "s3://results/jobs/trace-1/p03.parquet"
SHA = "a" * 64
OTHER = "b" * 64
META = {"spatialjoin.contract": "v2.1", "spatialjoin.trace_id": "trace-1",
        "spatialjoin.partition_key": "p03", "spatialjoin.row_count": "42", "geo": "{}"}


def obj(**kw: Any) -> ObjectFacts:
    return replace(ObjectFacts(uri=URI, size=1000, sha256=SHA, metadata=META, footer_rows=42),
                   **kw)


@pytest.mark.parametrize(("uri", "expected"), [
    (URI, ("trace-1", "p03")),
    ("s3://b/trace/p.parquet", ("trace", "p")),
    ("s3://b/deep/er/prefix/t/p00.parquet", ("t", "p00")),
    ("s3://b/p.parquet", None),
    ("s3://b/jobs/trace-1/p03.json", None),
    ("s3://b/jobs/trace-1/.parquet", None),
])
def test_key_parts(uri: str, expected: tuple[str, str] | None) -> None:
    assert key_parts(uri) == expected


CASES: list[tuple[str, ObjectFacts, RecordedResult | None, str | None,
                  list[tuple[str, str]], Action, str, bool]] = [
    ("lost row, partition processing", obj(), None, "processing", [], Action.RESTORE,
     "restored", True),
    ("lost row, partition done", obj(), None, "done", [], Action.RESTORE, "restored", True),
    ("lost row, partition unregistered", obj(), None, None, [], Action.RESTORE, "restored", True),
    ("lost row, partition cancelled: result back, status kept", obj(), None, "cancelled", [],
     Action.RESTORE, "restored", False),
    ("lost row, job status agrees", obj(), None, "done", [("job status", SHA)], Action.RESTORE,
     "restored", True),
    ("same row, done", obj(), RecordedResult(URI, SHA, 42), "done", [], Action.SKIP,
     "already recorded", False),
    ("same row, partition behind", obj(), RecordedResult(URI, SHA, 42), "failed", [],
     Action.MARK_DONE, "partition was failed", True),
    ("row with another checksum", obj(), RecordedResult(URI, OTHER, 42), "done", [],
     Action.INCONSISTENT, "spatial_join_results records", False),
    ("job status records another checksum", obj(), None, "done",
     [("SpatialJoinJob ns/j status.results", OTHER)], Action.INCONSISTENT,
     "SpatialJoinJob ns/j status.results records", False),
    ("unreadable object", obj(sha256=None, error="ArrowInvalid: not a parquet file"), None,
     "done", [], Action.INCONSISTENT, "unreadable: ArrowInvalid", False),
    ("footer lacks our metadata", obj(metadata={"geo": "{}"}), None, "done", [],
     Action.INCONSISTENT, "lacks spatialjoin.contract", False),
    ("footer names another partition",
     obj(metadata={**META, "spatialjoin.partition_key": "p04"}), None, "done", [],
     Action.INCONSISTENT, "footer names traceId 'trace-1' partition 'p04'", False),
    ("row_count disagrees with the row groups", obj(footer_rows=41), None, "done", [],
     Action.INCONSISTENT, "row_count 42 but its row groups hold 41", False),
    ("unknown contract", obj(metadata={**META, "spatialjoin.contract": "v9"}), None, "done", [],
     Action.INCONSISTENT, "metadata invalid", False),
    ("contract deviations", obj(deviations=("column-type feature_id: int32",)), None, "done",
     [], Action.INCONSISTENT, "deviates from contract v2.1", False),
    ("not a result object", obj(uri="s3://results/jobs/README.txt"), None, None, [],
     Action.IGNORE, "not a result object", False),
]


@pytest.mark.parametrize(("name", "facts", "recorded", "status", "refs", "action", "reason",
                          "mark_done"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, facts: ObjectFacts, recorded: RecordedResult | None,
                status: str | None, refs: list[tuple[str, str]], action: Action, reason: str,
                mark_done: bool) -> None:
    decision = decide(facts, recorded, status, refs)
    assert decision.action is action
    assert reason in decision.reason
    assert decision.mark_done is mark_done
    if action in (Action.RESTORE, Action.MARK_DONE, Action.SKIP):
        assert (decision.trace_id, decision.partition, decision.contract, decision.rows,
                decision.sha256, decision.bytes) == ("trace-1", "p03", "v2.1", 42, SHA, 1000)


def test_lost_partitions_are_done_rows_nothing_restores() -> None:
    done = [("t", "p00", "u"), ("t", "p01", "u"), ("t", "p02", "u")]
    assert lost_partitions(done, {("t", "p01")}) == [LostPartition("t", "p00", "u"),
                                                     LostPartition("t", "p02", "u")]


def decision(action: Action, partition: str = "p00") -> Decision:
    return Decision(f"s3://b/t/{partition}.parquet", action, "why", "t", partition)


def test_report_summary_and_consistency() -> None:
    report = RestoreReport(source="s3://b", decisions=[
        decision(Action.RESTORE), decision(Action.SKIP, "p01"), decision(Action.IGNORE, "x")])
    assert report.consistent
    assert report.summary() == {"restore": 1, "mark-done": 0, "skip": 1, "inconsistent": 0,
                                "ignore": 1, "lost": 0, "requeued": 0}
    report.lost = [LostPartition("t", "p05", "u")]
    assert not report.consistent
    report.requeued = list(report.lost)
    assert report.consistent
    report.decisions.append(decision(Action.INCONSISTENT, "p02"))
    assert not report.consistent
    data = report.to_json()
    assert data["summary"]["inconsistent"] == 1  # type: ignore[index]
    assert data["lost"] == [{"traceId": "t", "partition": "p05", "jobId": "u",
                             "requeued": True}]
