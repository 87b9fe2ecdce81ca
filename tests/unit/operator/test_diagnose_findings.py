"""Diagnosis rules, table-driven: facts in, findings (code, severity, cause, fix) out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spatialjoin_operator.diagnose.facts import (
    Facts,
    IndexFacts,
    JobRef,
    PartitionRecord,
    PlanFacts,
    ResultRecord,
    ScanNode,
    TableFacts,
    TableRole,
)
from spatialjoin_operator.diagnose.findings import Finding, Severity, find, primary

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MIB = 1 << 20
GIST = IndexFacts("domain_a_polygons_geom_gist", "gist", ("geom",), 64 * 1024)
PART_IDX = IndexFacts("domain_a_polygons_partition_idx", "btree", ("spatial_partition",), 16384)
PKEY = IndexFacts("domain_a_polygons_pkey", "btree", ("id",), 32768)
POINT_GIST = IndexFacts("domain_b_points_geom_gist", "gist", ("geom",), 800 * 1024)


def polygons(**kw: Any) -> TableFacts:
    base = TableFacts(role=TableRole.POLYGONS, table="domain_a_polygons",
                      qualified="public.domain_a_polygons", geometry_column="geom",
                      table_bytes=400 * 1024, indexes_bytes=112 * 1024, total_bytes=512 * 1024,
                      relpages=45, reltuples=500, last_analyze=NOW - timedelta(hours=1),
                      n_live_tup=500, n_dead_tup=0, n_mod_since_analyze=0,
                      indexes=(GIST, PART_IDX, PKEY))
    return replace(base, **kw)


def points(**kw: Any) -> TableFacts:
    base = TableFacts(role=TableRole.POINTS, table="domain_b_points",
                      qualified="public.domain_b_points", geometry_column="geom",
                      table_bytes=1300 * 1024, indexes_bytes=800 * 1024, total_bytes=2100 * 1024,
                      relpages=167, reltuples=20000, last_analyze=NOW - timedelta(hours=1),
                      indexes=(POINT_GIST,))
    return replace(base, **kw)


def plan(*scans: ScanNode, **kw: Any) -> PlanFacts:
    base = PlanFacts(partition="p00", reason="asked for", analyzed=True, planning_ms=9.0,
                     execution_ms=5.0, scans=scans)
    return replace(base, **kw)


def seq(relation: str = "domain_a_polygons") -> ScanNode:
    return ScanNode("Seq Scan", relation, plan_rows=3, actual_rows=52, loops=1, total_ms=2.0)


def bitmap(index: str) -> ScanNode:
    return ScanNode("Bitmap Index Scan", None, index=index, actual_rows=52, loops=1)


def row(name: str, status: str = "done", **kw: Any) -> PartitionRecord:
    return PartitionRecord(partition=name, status=status, attempt=kw.pop("attempt", 1), **kw)


def result(name: str) -> ResultRecord:
    return ResultRecord(name, f"s3://b/p/t/{name}.parquet", 10, 100, "a" * 64, "v2.1")


JOB = JobRef(namespace="ns", name="job", uid="u", deadline_seconds=90, pool="pool-a",
             uri_prefix="s3://b/p")


def facts(**kw: Any) -> Facts:
    base = Facts(trace_id="t", now=NOW, job=JOB, partitions=(row("p00"),),
                 results=(result("p00"),), tables=(polygons(), points()), pgstattuple=True)
    return replace(base, **kw)


def codes(found: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.code, f.severity) for f in found]


CASES: list[tuple[str, Facts, list[tuple[str, Severity]]]] = [
    ("healthy: nothing", facts(plans=(plan(ScanNode("Bitmap Heap Scan", "domain_a_polygons"),
                                           bitmap("domain_a_polygons_geom_gist")),)), []),
    ("GiST index dropped, plan uses the partition B-tree",
     facts(tables=(polygons(indexes=(PART_IDX, PKEY)), points()),
           plans=(plan(bitmap("domain_a_polygons_partition_idx")),)),
     [("MissingGistIndex", Severity.CRITICAL)]),
    ("GiST index dropped, Seq Scan: one finding, not two",
     facts(tables=(polygons(indexes=(PKEY,)), points()), plans=(plan(seq()),)),
     [("MissingGistIndex", Severity.CRITICAL)]),
    ("GiST on the points dropped",
     facts(tables=(polygons(), points(indexes=())), plans=(plan(seq("domain_b_points")),)),
     [("MissingGistIndex", Severity.CRITICAL)]),
    ("invalid GiST index (failed CREATE INDEX CONCURRENTLY)",
     facts(tables=(polygons(indexes=(replace(GIST, valid=False), PKEY)), points())),
     [("InvalidGistIndex", Severity.CRITICAL)]),
    ("Seq Scan beside a valid GiST index, never analyzed",
     facts(tables=(polygons(last_analyze=None, reltuples=-1), points()), plans=(plan(seq()),)),
     [("StaleStatistics", Severity.WARNING)]),
    ("Seq Scan beside a valid GiST index, many rows modified since ANALYZE",
     facts(tables=(polygons(n_mod_since_analyze=5000), points()), plans=(plan(seq()),)),
     [("StaleStatistics", Severity.WARNING)]),
    ("Seq Scan on a small analyzed table: the planner's choice",
     facts(plans=(plan(seq()),)), [("SeqScanSmallTable", Severity.INFO)]),
    ("Seq Scan on a large analyzed table with a valid index",
     facts(tables=(polygons(relpages=50_000), points()), plans=(plan(seq()),)),
     [("SeqScanDespiteIndex", Severity.WARNING)]),
    ("modified rows alone (right after a load) are no finding",
     facts(tables=(polygons(n_mod_since_analyze=500), points(n_mod_since_analyze=20000))), []),
    ("never analyzed, no plan", facts(tables=(polygons(last_analyze=None), points())),
     [("StaleStatistics", Severity.WARNING)]),
    ("source table missing", facts(tables=(polygons(qualified=None), points())),
     [("TableMissing", Severity.CRITICAL)]),
]


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_index_plan_and_statistics_rules(name: str, given: Facts,
                                         expected: list[tuple[str, Severity]]) -> None:
    assert codes(find(given)) == expected


def test_missing_gist_names_the_fix_and_the_evidence() -> None:
    found = find(facts(tables=(polygons(indexes=(PART_IDX, PKEY)), points()),
                       plans=(plan(bitmap("domain_a_polygons_partition_idx")),)))
    (finding,) = found
    assert "CREATE INDEX CONCURRENTLY domain_a_polygons_geom_gist ON public.domain_a_polygons " \
           "USING gist (geom)" in finding.fix
    assert "ANALYZE public.domain_a_polygons" in finding.fix and "Off-peak" in finding.fix
    assert "domain_a_polygons_partition_idx" in finding.evidence[0]
    assert primary(found) is finding


def test_stale_statistics_recommends_analyze() -> None:
    (finding,) = find(facts(tables=(polygons(n_mod_since_analyze=5000), points()),
                            plans=(plan(seq()),)))
    assert finding.fix.startswith("ANALYZE public.domain_a_polygons")
    assert "5000 rows modified" in finding.cause


BLOATED = replace(GIST, bytes=3 * MIB, free_percent=88.2, dead_tuple_percent=0.0)
DENSE_POINTS = replace(POINT_GIST, bytes=2 * MIB, free_percent=32.1, dead_tuple_percent=0.0)
BLOAT_CASES: list[tuple[str, TableFacts, list[tuple[str, Severity]]]] = [
    ("ratio above 60 %, pgstattuple confirms",
     polygons(table_bytes=3 * MIB, indexes_bytes=3 * MIB + 48 * 1024,
              indexes=(BLOATED, PART_IDX, PKEY)), [("IndexBloat", Severity.WARNING)]),
    ("ratio above 60 %, pgstattuple says dense (GiST on points)",
     points(table_bytes=3 * MIB, indexes_bytes=2 * MIB, indexes=(DENSE_POINTS,)),
     [("IndexSizeExpected", Severity.INFO)]),
    ("ratio above 60 %, no pgstattuple", polygons(table_bytes=2 * MIB, indexes_bytes=3 * MIB),
     [("PossibleIndexBloat", Severity.WARNING)]),
    ("ratio above 60 % but under 1 MiB of indexes",
     polygons(table_bytes=100 * 1024, indexes_bytes=900 * 1024), []),
    ("ratio at 60 %: not above", polygons(table_bytes=10 * MIB, indexes_bytes=6 * MIB), []),
    ("dead tuples from pgstattuple", polygons(heap_dead_tuple_percent=35.0),
     [("HeapDeadTuples", Severity.WARNING)]),
    ("dead tuples estimated from pg_stat", polygons(n_live_tup=3000, n_dead_tup=2000),
     [("HeapDeadTuples", Severity.WARNING)]),
    ("free heap space", polygons(table_bytes=8 * MIB, heap_free_percent=70.0),
     [("TableBloat", Severity.WARNING)]),
]


@pytest.mark.parametrize(("name", "table", "expected"), BLOAT_CASES,
                         ids=[c[0] for c in BLOAT_CASES])
def test_bloat_rules(name: str, table: TableFacts, expected: list[tuple[str, Severity]]) -> None:
    assert codes(find(facts(tables=(table,)))) == expected


def test_index_bloat_recommends_reindex_repack_and_vacuum_full_with_percentages() -> None:
    (finding,) = find(facts(tables=(polygons(table_bytes=3 * MIB, indexes_bytes=4 * MIB,
                                             indexes=(BLOATED, PART_IDX, PKEY)),)))
    assert "REINDEX INDEX CONCURRENTLY domain_a_polygons_geom_gist" in finding.fix
    assert "pg_repack" in finding.fix and "VACUUM FULL" in finding.fix
    assert "133%" in finding.cause
    assert any("free 88.2%" in item for item in finding.evidence)


HEAP_ERROR = "HeapCapExceeded: heap cap exceeded while streaming join rows: 4200 MB > 4096 MB"
FAILURE_CASES: list[tuple[str, tuple[PartitionRecord, ...], list[tuple[str, Severity]]]] = [
    ("heap cap by kind", (row("p01", "failed", failure_kind="heap-cap", error_log=HEAP_ERROR),),
     [("HeapCapExceeded", Severity.CRITICAL)]),
    ("heap cap by text only", (row("p01", "failed", error_log=HEAP_ERROR),),
     [("HeapCapExceeded", Severity.CRITICAL)]),
    ("serialization failure",
     (row("p01", "processing", attempt=2, updated_at=NOW,
          error_log="SerializationFailure: could not serialize access due to concurrent "
                    "update"),), [("SerializationFailure", Severity.WARNING)]),
    ("deadlock", (row("p01", "failed", failure_kind="transient-exhausted",
                      error_log="gave up after 3 retries: DeadlockDetected: deadlock detected"),),
     [("SerializationFailure", Severity.WARNING)]),
    ("schema drift", (row("p01", "failed", failure_kind="schema-drift",
                          error_log="result deviates from contract v2.1"),),
     [("PartitionFailed", Severity.CRITICAL)]),
    ("transient exhausted", (row("p01", "dead", failure_kind="transient-exhausted",
                                 error_log="gave up after 3 retries: OSError"),),
     [("PartitionFailed", Severity.WARNING)]),
    ("stuck in processing past the deadline",
     (row("p01", "processing", worker="w1", updated_at=NOW - timedelta(seconds=300)),),
     [("StuckPartition", Severity.WARNING)]),
    ("processing within the deadline",
     (row("p01", "processing", updated_at=NOW - timedelta(seconds=30)),), []),
    ("slow partition", (row("p00", duration_ms=120_000),), [("SlowPartition", Severity.WARNING)]),
]


@pytest.mark.parametrize(("name", "rows", "expected"), FAILURE_CASES,
                         ids=[c[0] for c in FAILURE_CASES])
def test_failure_and_progress_rules(name: str, rows: tuple[PartitionRecord, ...],
                                    expected: list[tuple[str, Severity]]) -> None:
    given = facts(partitions=(row("p00"), *rows))
    assert codes(find(given)) == expected


def test_heap_cap_fix_names_max_heap_and_concurrency() -> None:
    (finding,) = find(facts(partitions=(row("p00"), row("p01", "failed", failure_kind="heap-cap",
                                                         error_log=HEAP_ERROR))))
    assert "spec.maxHeapMb" in finding.fix and "spec.concurrency" in finding.fix
    assert "p01" in finding.subject and "4200 MB" in finding.cause


def test_done_partitions_without_result_rows_point_at_restore() -> None:
    (finding,) = find(facts(partitions=(row("p00"), row("p01")), results=(result("p00"),)))
    assert finding.code == "ResultRowsMissing"
    assert finding.fix.startswith("spatialjoin restore --from s3://b/p")


def test_unknown_trace() -> None:
    assert codes(find(Facts(trace_id="nope", now=NOW))) == [("TraceNotFound", Severity.WARNING)]


@pytest.mark.parametrize(("given", "expected"), [
    (plan(timed_out=True, statement_timeout_s=5.0, analyzed=False, execution_ms=None),
     [("QueryTimedOut", Severity.WARNING)]),
    (plan(execution_ms=95_000.0), [("SlowQuery", Severity.WARNING)]),
    (plan(temp_blocks=1200), [("SpillsToDisk", Severity.INFO)]),
    (plan(error="InsufficientPrivilege: permission denied", analyzed=False),
     [("ExplainFailed", Severity.INFO)]),
])
def test_plan_time_rules(given: PlanFacts, expected: list[tuple[str, Severity]]) -> None:
    assert codes(find(facts(plans=(given,)))) == expected


def test_findings_are_ordered_by_severity() -> None:
    found = find(facts(tables=(polygons(indexes=(PKEY,), heap_dead_tuple_percent=40.0),
                               points(table_bytes=MIB, indexes_bytes=2 * MIB)),
                       plans=(plan(temp_blocks=5),)))
    severities = [f.severity for f in found]
    assert severities == sorted(severities, key=[Severity.CRITICAL, Severity.WARNING,
                                                 Severity.INFO].index)
    assert found[0].code == "MissingGistIndex"
