"""Pure rules: observed facts → findings, each with a cause and the recommended fix.

Every rule is a plain function of :class:`Facts`; nothing here touches the
database or the apiserver, so the rules are tested table-driven with
hand-made facts. The thresholds are the design's (index size above 60 % of
the table means bloat) plus what keeps them from crying wolf:

* A Seq Scan on a source table means a missing GiST index or stale
  statistics. The index check reads the catalogue (pg_index/pg_am), not only
  the plan, because with the partition column indexed the planner reads a
  partition through that B-tree when the GiST index is gone, and no Seq Scan
  appears at all. Stale statistics are named only as the cause of a Seq Scan
  beside a valid GiST index, or when a table was never analyzed: right after
  a bulk load ``n_mod_since_analyze`` still counts the loaded rows, so it is
  no proof on its own.
* Index bloat: above 60 % the ratio is a suspicion. pgstattuple, when
  installed, confirms it (free space or dead tuples in the index) or clears
  it: a fresh GiST index on small point rows is 60 % of its heap by nature.
  Relations under 1 MiB of indexes are skipped: page granularity dominates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from spatialjoin_contracts.ddl import FailureKind, TaskStatus

from .facts import Facts, PartitionRecord, PlanFacts, TableFacts, TableRole
from .plan import SEQ_SCAN, describe, scans_of

INDEX_RATIO_LIMIT: Final = 0.60
"""Index size above this share of the table size means bloat (the design's rule)."""
BLOAT_MIN_INDEX_BYTES: Final = 1 << 20
BLOAT_FREE_PERCENT: Final = 50.0
"""pgstattuple free_percent of an index at or above which the bloat is confirmed."""
DEAD_TUPLE_PERCENT: Final = 20.0
STALE_MOD_FRACTION: Final = 0.10
STALE_MOD_BASE: Final = 50
"""Rows modified since the last ANALYZE beyond which statistics are stale (autovacuum's
analyze threshold: 50 + 10 % of the table)."""
SMALL_TABLE_PAGES: Final = 1024
"""8 MiB: below this a Seq Scan beside a valid index is the planner's cheaper choice."""
DEFAULT_DEADLINE_S: Final = 90
HEAP_CAP_TEXT: Final = "heap cap exceeded"
_SERIALIZATION: Final = re.compile(
    r"could not serialize access|serializationfailure|deadlock detected|deadlockdetected"
    r"|\b40001\b|\b40P01\b", re.IGNORECASE)
SOURCE_ROLES: Final = (TableRole.POLYGONS, TableRole.POINTS)


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


_RANK: Final = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One diagnosed problem (or a cleared suspicion, as info)."""

    code: str
    """CamelCase, usable as a condition reason."""
    severity: Severity
    subject: str
    cause: str
    fix: str
    evidence: tuple[str, ...] = ()

    @property
    def actionable(self) -> bool:
        return self.severity is not Severity.INFO


def find(facts: Facts) -> list[Finding]:
    """Every finding, most severe first (rule order within a severity)."""
    rules: Sequence[Callable[[Facts], Iterable[Finding]]] = (
        _trace_rules, _failure_rules, _index_rules, _plan_rules, _statistics_rules,
        _bloat_rules)
    found = [finding for rule in rules for finding in rule(facts)]
    return sorted(found, key=lambda f: _RANK[f.severity])


def primary(findings: Sequence[Finding]) -> Finding | None:
    """The finding a condition should name: the first actionable one."""
    return next((f for f in findings if f.actionable), None)


def deadline_s(facts: Facts) -> int:
    return (facts.job.deadline_seconds if facts.job and facts.job.deadline_seconds
            else DEFAULT_DEADLINE_S)


# --- the trace: rows, results, progress -----------------------------------------------


def _trace_rules(facts: Facts) -> Iterable[Finding]:
    if not facts.partitions and not facts.results and facts.job is None:
        yield Finding("TraceNotFound", Severity.WARNING, f"trace {facts.trace_id}",
                      f"no spatial_async_jobs row, no result and no SpatialJoinJob carry "
                      f"traceId {facts.trace_id!r}",
                      "check the trace id: status.traceId of the job, or the "
                      "X-Request-Trace-ID it was submitted with")
        return
    results = {r.partition for r in facts.results}
    lost = [p.partition for p in facts.partitions
            if p.status == TaskStatus.DONE.value and p.partition not in results]
    if lost:
        source = facts.job.uri_prefix if facts.job and facts.job.uri_prefix else \
            "s3://BUCKET/PREFIX"
        yield Finding("ResultRowsMissing", Severity.CRITICAL, f"trace {facts.trace_id}",
                      f"{len(lost)} partition(s) are done in spatial_async_jobs but have no "
                      f"spatial_join_results row: {_names(lost)} (the results table was lost "
                      "or truncated)",
                      f"spatialjoin restore --from {source} (rebuilds the rows from the result "
                      "objects' footers, with the pools paused)")
    limit = deadline_s(facts)
    for row in facts.partitions:
        since = row.updated_at or row.started_at
        if row.status == TaskStatus.PROCESSING.value and since is not None:
            age = (facts.now - since).total_seconds()
            if age > limit:
                yield Finding(
                    "StuckPartition", Severity.WARNING, f"partition {row.partition}",
                    f"partition {row.partition} has been processing on worker "
                    f"{row.worker or '?'} for {age:.0f}s without progress "
                    f"(sla.deadlineSeconds {limit}s, attempt {row.attempt})",
                    "read the worker's log and the plan findings; the operator re-publishes "
                    "an attempt stuck past sla.deadlineSeconds, within spec.retry.maxRetries")
        if (row.status == TaskStatus.DONE.value and row.duration_ms is not None
                and row.duration_ms > limit * 1000):
            yield Finding(
                "SlowPartition", Severity.WARNING, f"partition {row.partition}",
                f"partition {row.partition} alone took {row.duration_ms / 1000:.1f}s, more "
                f"than sla.deadlineSeconds ({limit}s)",
                "see the plan findings; when the plan is sound the partition is too large: "
                "split it in the WorkerPool's partitionMap or raise sla.deadlineSeconds")


# --- the job's errors -------------------------------------------------------------------


_FAILURE_FIXES: Final = {
    FailureKind.SCHEMA_DRIFT.value: (
        Severity.CRITICAL, "the result deviated from its contract; the pool's P1 rolls back to "
        "contract v2.0; fix the source column types the error names"),
    FailureKind.MATERIALIZATION.value: (
        Severity.CRITICAL, "check the storage endpoint, bucket and credentials "
        "(WorkerPool spec.storage) and that the bucket accepts writes"),
    FailureKind.QUERY.value: (
        Severity.CRITICAL, "fix what the error names (a missing table or column, a "
        "permission, an invalid geometry the policy skips); retries cannot help"),
    FailureKind.POISON.value: (
        Severity.CRITICAL, "the task message was malformed: read it on the dead-letter topic "
        "with its dlq.error header"),
    FailureKind.TRANSIENT_EXHAUSTED.value: (
        Severity.WARNING, "the database or the storage failed through every retry: check "
        "their health; the operator retries within spec.retry.maxRetries"),
}


def _failure_rules(facts: Facts) -> Iterable[Finding]:
    heap = [p for p in facts.partitions if _heap_cap(p)]
    if heap:
        yield Finding(
            "HeapCapExceeded", Severity.CRITICAL, f"partitions {_names(p.partition for p in heap)}",
            f"{len(heap)} partition(s) hit the worker's memory cap: "
            f"{_excerpt(heap[0].error_log)}",
            "raise the WorkerPool's spec.maxHeapMb or lower spec.concurrency (a worker runs "
            "that many tasks within the cap); split a partition that is large on its own in "
            "the partitionMap", _errors(heap))
    serialization = [p for p in facts.partitions
                     if p.error_log and _SERIALIZATION.search(p.error_log)]
    if serialization:
        yield Finding(
            "SerializationFailure", Severity.WARNING,
            f"partitions {_names(p.partition for p in serialization)}",
            f"{len(serialization)} partition(s) met serialization failures or deadlocks: "
            f"{_excerpt(serialization[0].error_log)}",
            "transient: the worker retries with backoff. When it repeats, look for concurrent "
            "writers and long transactions on the same tables (pg_stat_activity, pg_locks) and "
            "keep maintenance that locks (VACUUM FULL, REINDEX without CONCURRENTLY) off-peak",
            _errors(serialization))
    counted = {id(p) for p in (*heap, *serialization)}
    failed = [p for p in facts.partitions
              if p.status in (TaskStatus.FAILED.value, TaskStatus.DEAD.value)
              and id(p) not in counted]
    for kind in sorted({p.failure_kind or "unknown" for p in failed}):
        rows = [p for p in failed if (p.failure_kind or "unknown") == kind]
        severity, fix = _FAILURE_FIXES.get(kind, (Severity.WARNING, "read the error"))
        yield Finding(
            "PartitionFailed", severity, f"partitions {_names(p.partition for p in rows)}",
            f"{len(rows)} partition(s) failed ({kind}): {_excerpt(rows[0].error_log)}", fix,
            _errors(rows))


def _heap_cap(row: PartitionRecord) -> bool:
    return (row.failure_kind == FailureKind.HEAP_CAP.value
            or HEAP_CAP_TEXT in (row.error_log or "").lower())


# --- indexes of the source tables -------------------------------------------------------


def _index_rules(facts: Facts) -> Iterable[Finding]:
    for table in _sources(facts):
        if not table.exists:
            yield Finding("TableMissing", Severity.CRITICAL, f"table {table.table}",
                          f"{table.role.value} table {table.table!r} does not exist for the "
                          "connection's search_path",
                          f"load the table or fix spec.source.{table.role.value}.table")
            continue
        column = table.geometry_column or "geom"
        gist = [ix for ix in table.indexes if ix.method == "gist" and column in ix.columns]
        evidence = _scan_evidence(facts.plans, table)
        if not gist:
            name = f"{table.table.rsplit('.', 1)[-1]}_{column}_gist"
            yield Finding(
                "MissingGistIndex", Severity.CRITICAL, f"table {table.qualified}",
                f"{table.qualified} has no GiST index on {column} (pg_indexes lists: "
                f"{', '.join(ix.name for ix in table.indexes) or 'none'}): every bbox and "
                "ST_Intersects test reads rows one by one",
                f"CREATE INDEX CONCURRENTLY {name} ON {table.qualified} USING gist ({column}); "
                f"then ANALYZE {table.qualified}. Off-peak: the build reads the whole table",
                evidence)
        elif not any(ix.valid for ix in gist):
            names = ", ".join(ix.name for ix in gist)
            yield Finding(
                "InvalidGistIndex", Severity.CRITICAL, f"index {names}",
                f"the GiST index {names} on {table.qualified}({column}) is invalid (a failed "
                "CREATE INDEX CONCURRENTLY): the planner cannot use it",
                f"REINDEX INDEX CONCURRENTLY {gist[0].name} off-peak (or DROP INDEX "
                "CONCURRENTLY and create it again)", evidence)


def _sources(facts: Facts) -> list[TableFacts]:
    return [t for t in facts.tables if t.role in SOURCE_ROLES]


def _scan_evidence(plans: Sequence[PlanFacts], table: TableFacts) -> tuple[str, ...]:
    names = [ix.name for ix in table.indexes]
    return tuple(f"partition {plan.partition}: {describe(scan)}" for plan in plans
                 for scan in scans_of(plan.scans, table.qualified or table.table, names))


# --- the plans --------------------------------------------------------------------------


def _plan_rules(facts: Facts) -> Iterable[Finding]:
    limit = deadline_s(facts)
    for plan in facts.plans:
        subject = f"partition {plan.partition}"
        if plan.timed_out:
            yield Finding(
                "QueryTimedOut", Severity.WARNING, subject,
                f"EXPLAIN ANALYZE of partition {plan.partition} did not finish within the "
                f"statement timeout ({plan.statement_timeout_s:g}s); the plan shown is the "
                "estimate only", "see the index findings; otherwise split the partition or "
                "raise the workers' SPATIALJOIN_STATEMENT_TIMEOUT_S")
        elif plan.execution_ms is not None and plan.execution_ms > limit * 1000:
            yield Finding(
                "SlowQuery", Severity.WARNING, subject,
                f"partition {plan.partition}'s query took {plan.execution_ms / 1000:.1f}s, "
                f"more than sla.deadlineSeconds ({limit}s)",
                "see the index findings; when the plan is sound split the partition in the "
                "partitionMap or raise sla.deadlineSeconds")
        if plan.temp_blocks:
            yield Finding(
                "SpillsToDisk", Severity.INFO, subject,
                f"the query wrote {plan.temp_blocks} temporary blocks (sorts or hashes larger "
                "than work_mem)", "raise work_mem for the workers' role "
                "(ALTER ROLE … SET work_mem) if the spill is large")
        if plan.error and not plan.timed_out:
            yield Finding("ExplainFailed", Severity.INFO, subject,
                          f"EXPLAIN failed: {_excerpt(plan.error)}", "none; read the error")
        for table in _sources(facts):
            yield from _seq_scan(facts, plan, table)


def _seq_scan(facts: Facts, plan: PlanFacts, table: TableFacts) -> Iterable[Finding]:
    if not table.exists:
        return
    column = table.geometry_column or "geom"
    valid = [ix for ix in table.indexes if ix.method == "gist" and column in ix.columns
             and ix.valid]
    seq = [s for s in scans_of(plan.scans, table.qualified or table.table)
           if s.node_type == SEQ_SCAN]
    if not seq or not valid:
        return  # no Seq Scan, or MissingGistIndex / InvalidGistIndex already says why
    evidence = tuple(f"partition {plan.partition}: {describe(s)}" for s in seq)
    stale = _staleness(table)
    if stale:
        yield Finding(
            "StaleStatistics", Severity.WARNING, f"table {table.qualified}",
            f"Seq Scan on {table.qualified} although the GiST index {valid[0].name} exists: "
            f"its statistics are stale ({stale})",
            f"ANALYZE {table.qualified}; and check autovacuum keeps up "
            "(pg_stat_user_tables.last_autoanalyze)", evidence)
    elif table.relpages <= SMALL_TABLE_PAGES:
        yield Finding(
            "SeqScanSmallTable", Severity.INFO, f"table {table.qualified}",
            f"Seq Scan on {table.qualified} ({table.relpages} pages) beside a valid GiST index "
            "and fresh statistics: reading a small table whole is the cheaper plan",
            "none needed", evidence)
    else:
        yield Finding(
            "SeqScanDespiteIndex", Severity.WARNING, f"table {table.qualified}",
            f"Seq Scan on {table.qualified} ({table.relpages} pages) although the GiST index "
            f"{valid[0].name} is valid and the statistics fresh: the bbox filter selects most "
            "of the table, or the index does not match the query's column or SRID",
            "check that spec.bbox and the partition bbox are selective and that the index is "
            f"on {column} in EPSG:4326; REINDEX INDEX CONCURRENTLY {valid[0].name} off-peak "
            "if it is corrupt", evidence)


def _staleness(table: TableFacts) -> str | None:
    """Why the statistics are stale, or None when they are fresh."""
    if table.last_analyzed is None or table.reltuples < 0:
        return "never analyzed"
    modified = table.n_mod_since_analyze or 0
    if modified > STALE_MOD_BASE + STALE_MOD_FRACTION * max(table.reltuples, 0.0):
        return (f"{modified} rows modified since the last ANALYZE at "
                f"{table.last_analyzed.isoformat(timespec='seconds')}, "
                f"{table.reltuples:.0f} rows estimated")
    return None


def _statistics_rules(facts: Facts) -> Iterable[Finding]:
    for table in _sources(facts):
        if table.exists and (table.last_analyzed is None or table.reltuples < 0):
            seq = any(s.node_type == SEQ_SCAN for plan in facts.plans
                      for s in scans_of(plan.scans, table.qualified or table.table))
            if not seq:  # with a Seq Scan, _seq_scan already reported it
                yield Finding(
                    "StaleStatistics", Severity.WARNING, f"table {table.qualified}",
                    f"{table.qualified} has never been analyzed: the planner guesses its size "
                    "and selectivity", f"ANALYZE {table.qualified}")


# --- sizes and bloat --------------------------------------------------------------------


def _bloat_rules(facts: Facts) -> Iterable[Finding]:
    for table in facts.tables:
        if not table.exists:
            continue
        yield from _index_bloat(facts, table)
        yield from _heap_bloat(table)


def _index_bloat(facts: Facts, table: TableFacts) -> Iterable[Finding]:
    ratio = table.index_ratio
    if ratio is None or ratio <= INDEX_RATIO_LIMIT or table.indexes_bytes < BLOAT_MIN_INDEX_BYTES:
        return
    sizes = (f"indexes {_mib(table.indexes_bytes)} are {ratio:.0%} of the table's "
             f"{_mib(table.table_bytes)} (rule: above {INDEX_RATIO_LIMIT:.0%} means bloat)")
    biggest = sorted(table.indexes, key=lambda ix: ix.bytes, reverse=True)
    measured = [ix for ix in biggest if ix.free_percent is not None]
    subject = f"table {table.qualified}"
    repack = (f"pg_repack --table {table.qualified} (online), or VACUUM FULL {table.qualified} "
              "(ACCESS EXCLUSIVE lock: off-peak)")
    if measured:
        bloated = [ix for ix in measured if (ix.free_percent or 0) >= BLOAT_FREE_PERCENT
                   or (ix.dead_tuple_percent or 0) >= DEAD_TUPLE_PERCENT]
        stats = tuple(f"{ix.name}: {_mib(ix.bytes)}, free {ix.free_percent:.1f}%, dead tuples "
                      f"{ix.dead_tuple_percent or 0:.1f}% (pgstattuple)" for ix in measured)
        if bloated:
            names = ", ".join(ix.name for ix in bloated)
            yield Finding(
                "IndexBloat", Severity.WARNING, subject,
                f"{table.qualified}: {sizes}; pgstattuple confirms bloat in {names}",
                f"REINDEX INDEX CONCURRENTLY {bloated[0].name} off-peak; to rewrite the table "
                f"and its indexes: {repack}", stats)
        else:
            yield Finding(
                "IndexSizeExpected", Severity.INFO, subject,
                f"{table.qualified}: {sizes}, but pgstattuple shows the indexes dense (free "
                f"below {BLOAT_FREE_PERCENT:g}%): the size is structural (a GiST index on "
                "small rows is large by nature), not bloat", "none needed", stats)
        return
    stats = tuple(f"{ix.name}: {_mib(ix.bytes)}" for ix in biggest)
    yield Finding(
        "PossibleIndexBloat", Severity.WARNING, subject,
        f"{table.qualified}: {sizes}; pgstattuple is not installed to confirm it",
        "confirm: CREATE EXTENSION pgstattuple; SELECT free_percent, dead_tuple_percent FROM "
        f"pgstattuple('{biggest[0].name}'). If free space dominates: REINDEX INDEX "
        f"CONCURRENTLY {biggest[0].name} off-peak, or {repack}", stats)


def _heap_bloat(table: TableFacts) -> Iterable[Finding]:
    subject = f"table {table.qualified}"
    dead = table.heap_dead_tuple_percent
    source = "pgstattuple"
    if dead is None and table.n_dead_tup and table.n_live_tup is not None:
        total = table.n_dead_tup + table.n_live_tup
        if table.n_dead_tup >= 1000 and total:
            dead, source = 100.0 * table.n_dead_tup / total, "pg_stat_user_tables estimate"
    if dead is not None and dead >= DEAD_TUPLE_PERCENT:
        yield Finding(
            "HeapDeadTuples", Severity.WARNING, subject,
            f"{dead:.1f}% of {table.qualified}'s tuples are dead ({source})",
            f"VACUUM (ANALYZE) {table.qualified}; check that autovacuum keeps up "
            "(pg_stat_user_tables.last_autovacuum) and that no long transaction holds it back")
    free = table.heap_free_percent
    if free is not None and free >= BLOAT_FREE_PERCENT and table.table_bytes >= 1 << 20:
        yield Finding(
            "TableBloat", Severity.WARNING, subject,
            f"{free:.1f}% of {table.qualified}'s {_mib(table.table_bytes)} is free space "
            "(pgstattuple)",
            f"pg_repack --table {table.qualified} (online), or VACUUM FULL {table.qualified} "
            "(ACCESS EXCLUSIVE lock: off-peak)")


# --- wording helpers --------------------------------------------------------------------


def _names(names: Iterable[str], limit: int = 6) -> str:
    listed = sorted(set(names))
    text = ", ".join(listed[:limit])
    return text + (f" and {len(listed) - limit} more" if len(listed) > limit else "")


def _excerpt(text: str | None, limit: int = 300) -> str:
    line = " ".join((text or "no error recorded").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _errors(rows: Sequence[PartitionRecord]) -> tuple[str, ...]:
    return tuple(f"partition {p.partition} attempt {p.attempt}: {_excerpt(p.error_log, 200)}"
                 for p in rows[:6])


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.0f} KiB"
