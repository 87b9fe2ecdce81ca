"""EXPLAIN JSON parsing, the choice of partitions to explain, rendering, and the SLA hook."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spatialjoin_operator.diagnose import record
from spatialjoin_operator.diagnose.facts import (
    Facts,
    IndexFacts,
    PartitionRecord,
    ResultRecord,
    ScanNode,
    TableFacts,
    TableRole,
)
from spatialjoin_operator.diagnose.findings import find
from spatialjoin_operator.diagnose.plan import PlanFormatError, describe, parse_plan, scans_of
from spatialjoin_operator.diagnose.report import Report, to_json, to_text
from spatialjoin_operator.diagnose.service import choose_partitions

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# Trimmed from a real EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the worker's cursor.
ANALYZED: list[dict[str, Any]] = [{
    "Plan": {
        "Node Type": "Sort", "Actual Total Time": 4.9, "Actual Loops": 1,
        "Shared Hit Blocks": 814, "Shared Read Blocks": 3, "Temp Read Blocks": 0,
        "Temp Written Blocks": 0,
        "Plans": [
            {"Node Type": "Bitmap Heap Scan", "Relation Name": "domain_a_polygons", "Alias": "p",
             "Plan Rows": 3, "Actual Rows": 52, "Actual Loops": 1, "Actual Total Time": 1.5,
             "Recheck Cond": "((spatial_partition = 'p00'::text))",
             "Plans": [{"Node Type": "Bitmap Index Scan",
                        "Index Name": "domain_a_polygons_partition_idx", "Plan Rows": 52,
                        "Actual Rows": 52, "Actual Loops": 1, "Actual Total Time": 0.02}]},
            {"Node Type": "Nested Loop", "Plans": [
                {"Node Type": "CTE Scan", "Actual Loops": 1},
                {"Node Type": "Seq Scan", "Relation Name": "domain_b_points", "Alias": "b",
                 "Plan Rows": 20000, "Actual Rows": 8, "Actual Loops": 52,
                 "Actual Total Time": 2.0, "Filter": "st_intersects(a.geom, b.geom)",
                 "Rows Removed by Filter": 19992}]},
        ]},
    "Planning Time": 9.6, "Execution Time": 4.7, "Triggers": [],
}]


def test_parse_analyzed_plan() -> None:
    parsed = parse_plan(ANALYZED)
    assert (parsed.planning_ms, parsed.execution_ms) == (9.6, 4.7)
    assert (parsed.shared_hit_blocks, parsed.shared_read_blocks, parsed.temp_blocks) == (814, 3, 0)
    assert [(s.node_type, s.relation, s.index) for s in parsed.scans] == [
        ("Bitmap Heap Scan", "domain_a_polygons", None),
        ("Bitmap Index Scan", None, "domain_a_polygons_partition_idx"),
        ("Seq Scan", "domain_b_points", None),
    ]
    points = parsed.scans[2]
    assert points.total_ms == pytest.approx(104.0)  # 2.0 ms x 52 loops
    assert points.rows_removed_by_filter == 19992
    assert describe(points) == ("Seq Scan on domain_b_points (8 rows x 52 loops, 104.0 ms, "
                                "19992 rows removed by filter)")


def test_parse_estimate_only_plan_from_text() -> None:
    text = json.dumps([{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t",
                                 "Plan Rows": 10}}])
    parsed = parse_plan(text)
    assert parsed.execution_ms is None and parsed.scans[0].actual_rows is None
    assert describe(parsed.scans[0]) == "Seq Scan on t (estimated 10 rows)"


@pytest.mark.parametrize("bad", ["not json", [], [{"no": "plan"}], 42])
def test_parse_rejects_what_is_not_a_plan(bad: object) -> None:
    with pytest.raises(PlanFormatError):
        parse_plan(bad)


def test_scans_of_matches_relation_schema_qualified_and_its_indexes() -> None:
    scans = parse_plan(ANALYZED).scans
    found = scans_of(scans, "public.domain_a_polygons", ["domain_a_polygons_partition_idx"])
    assert [s.node_type for s in found] == ["Bitmap Heap Scan", "Bitmap Index Scan"]


def rec(name: str, status: str, **kw: Any) -> PartitionRecord:
    return PartitionRecord(partition=name, status=status, **kw)


PLANNED = ["p00", "p01", "p02", "p03"]
CHOICE_CASES: list[tuple[str, list[PartitionRecord], list[str], int, list[tuple[str, str]]]] = [
    ("asked for wins", [rec("p00", "done", duration_ms=5)], ["p02"], 1, [("p02", "asked for")]),
    ("stuck before slow", [rec("p00", "done", duration_ms=90_000),
                           rec("p01", "processing", updated_at=NOW - timedelta(seconds=200))],
     [], 2, [("p01", "stuck: processing for 200s"), ("p00", "slowest done: 90.0s")]),
    ("failed before done", [rec("p00", "done", duration_ms=10),
                            rec("p03", "failed", failure_kind="heap-cap")], [], 1,
     [("p03", "failed (heap-cap)")]),
    ("slowest done first", [rec("p00", "done", duration_ms=10), rec("p01", "done",
                                                                    duration_ms=900)],
     [], 1, [("p01", "slowest done: 0.9s")]),
    ("nothing ran yet", [], [], 1, [("p00", "first partition (nothing has run yet)")]),
    ("rows of partitions the job does not plan are skipped",
     [rec("zz", "processing", updated_at=NOW), rec("p02", "queued")], [], 1,
     [("p02", "queued")]),
    ("no plans asked", [rec("p00", "done", duration_ms=1)], [], 0, []),
]


@pytest.mark.parametrize(("name", "records", "asked", "limit", "expected"), CHOICE_CASES,
                         ids=[c[0] for c in CHOICE_CASES])
def test_choose_partitions(name: str, records: list[PartitionRecord], asked: list[str],
                           limit: int, expected: list[tuple[str, str]]) -> None:
    assert choose_partitions(records, PLANNED, asked, limit, NOW, 90) == expected


def report_with_missing_index() -> Report:
    table = TableFacts(role=TableRole.POLYGONS, table="domain_a_polygons",
                       qualified="public.domain_a_polygons", geometry_column="geom",
                       table_bytes=4096 * 100, indexes_bytes=8192, total_bytes=4096 * 102,
                       reltuples=500, last_analyze=NOW,
                       indexes=(IndexFacts("domain_a_polygons_pkey", "btree", ("id",), 8192),))
    facts = Facts(trace_id="t-1", now=NOW, tables=(table,),
                  partitions=(rec("p00", "done", duration_ms=1500, rows=10),),
                  results=(ResultRecord("p00", "s3://b/p/t-1/p00.parquet", 10, 99, "c" * 64,
                                        "v2.1"),),
                  plans=(), notes=("Events: forbidden",))
    return Report(facts, tuple(find(facts)))


def test_text_report_names_cause_fix_rows_and_notes() -> None:
    text = to_text(report_with_missing_index())
    assert "Diagnosis of traceId t-1" in text
    assert "[CRITICAL] MissingGistIndex: table public.domain_a_polygons" in text
    assert "fix:   CREATE INDEX CONCURRENTLY" in text
    assert "p00" in text and "1.5s" in text
    assert "Not gathered:" in text and "Events: forbidden" in text


def test_json_report_is_camel_case_and_serializable() -> None:
    data = to_json(report_with_missing_index())
    json.dumps(data)
    assert data["traceId"] == "t-1" and data["generatedAt"] == "2025-01-01T12:00:00Z"
    assert data["primary"]["code"] == "MissingGistIndex"
    assert data["summary"].startswith("MissingGistIndex: ")
    table = data["tables"][0]
    assert table["indexesBytes"] == 8192 and table["exists"] is True
    assert table["indexRatio"] == pytest.approx(0.02)
    assert data["partitions"][0]["durationMs"] == 1500


def test_needs_diagnosis_once_per_breach() -> None:
    breached = {"conditions": [{"type": "SLABreached", "status": "True"}]}
    assert record.needs_diagnosis({}, breached)
    assert not record.needs_diagnosis({record.DIAGNOSIS_ANNOTATION: "{}"}, breached)
    assert not record.needs_diagnosis({}, {"conditions": [{"type": "SLABreached",
                                                               "status": "False"}]})
    assert not record.needs_diagnosis({}, {})


def test_condition_and_annotation_from_a_report() -> None:
    report = report_with_missing_index()
    reason, message = record.condition_fields(report.primary)
    assert reason == "MissingGistIndex" and ". Fix: CREATE INDEX CONCURRENTLY" in message
    annotations = {record.DIAGNOSIS_ANNOTATION: record.annotation_value(report)}
    assert record.condition_from_annotation(annotations) == (reason, message)
    conditions = record.with_condition([{"type": "SLABreached", "status": "True"}], reason,
                                           message, 3, NOW)
    assert [c["type"] for c in conditions] == ["SLABreached", "Diagnosed"]
    assert conditions[1]["reason"] == "MissingGistIndex"
    assert conditions[1]["observedGeneration"] == 3


def test_no_cause_found_is_said_plainly() -> None:
    reason, message = record.condition_fields(None)
    assert reason == "NoCauseFound" and "workers" in message
    assert record.condition_from_annotation({record.DIAGNOSIS_ANNOTATION: "{bad"}) is None


def test_describe_index_scan_on_relation() -> None:
    scan = ScanNode("Index Scan", "t", index="t_idx", actual_rows=1, loops=2, total_ms=0.5)
    assert describe(scan) == "Index Scan on t using t_idx (1 rows x 2 loops, 0.5 ms)"


def test_a_failed_diagnosis_is_retried_after_a_pause_not_every_tick() -> None:
    breached = {"conditions": [{"type": "SLABreached", "status": "True"}]}
    failed = {record.DIAGNOSIS_ANNOTATION: record.failure_annotation(
        "t", "diagnosis failed: OperationalError: connection refused", NOW)}
    assert not record.needs_diagnosis(failed, breached, now=NOW + timedelta(minutes=1))
    assert record.needs_diagnosis(failed, breached, now=NOW + timedelta(minutes=5))
    assert not record.needs_diagnosis({record.DIAGNOSIS_ANNOTATION: "hand-edited"},
                                          breached, now=NOW)
