"""Read-only queries of a diagnosis: the trace's rows, the catalogue, pgstattuple, EXPLAIN.

Diagnosis never changes the database. Every connection made here runs with
``default_transaction_read_only`` on, EXPLAIN runs in a transaction that is
also declared READ ONLY and always rolled back, and every statement has a
timeout. A query that fails (a missing table, a missing privilege) becomes a
note in the report instead of stopping the diagnosis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from spatialjoin_contracts.ddl import JOBS_TABLE, RESULTS_TABLE
from spatialjoin_worker.query import JoinQuery

from . import findings
from .facts import IndexFacts, PartitionRecord, PlanFacts, ResultRecord, TableFacts, TableRole
from .plan import PlanFormatError, parse_plan

QUERY_TIMEOUT_MS: Final = 10_000
EXPLAIN_CURSOR: Final = "spatialjoin_diagnose"

Conn = psycopg.Connection[Any]


@dataclass
class Notes:
    """What could not be gathered; goes to the report's notes."""

    items: list[str] = field(default_factory=list)

    def add(self, what: str, exc: BaseException) -> None:
        self.items.append(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


@contextmanager
def connect(url: str, *, connect_timeout_s: int = 10) -> Iterator[Conn]:
    """A read-only session: default_transaction_read_only, a statement timeout, autocommit."""
    with psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout_s,
                         application_name="spatialjoin-diagnose") as conn:
        conn.execute("SET default_transaction_read_only = on")
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(QUERY_TIMEOUT_MS)))
        yield conn


def partition_records(conn: Conn, trace_id: str, notes: Notes) -> tuple[PartitionRecord, ...]:
    """The trace's spatial_async_jobs rows, by partition."""
    try:
        rows = conn.execute(
            f"SELECT partition_key, status, job_id, attempt, worker, kafka_partition, queued_at, "
            f"started_at, finished_at, updated_at, duration_ms, rows, bytes, failure_kind, "
            f"error_log FROM {JOBS_TABLE} WHERE trace_id = %s ORDER BY partition_key",
            (trace_id,)).fetchall()
    except psycopg.Error as exc:
        notes.add(f"{JOBS_TABLE} rows", exc)
        return ()
    return tuple(PartitionRecord(
        partition=r[0], status=r[1], job_id=r[2], attempt=int(r[3]), worker=r[4],
        kafka_partition=r[5], queued_at=r[6], started_at=r[7], finished_at=r[8],
        updated_at=r[9], duration_ms=r[10], rows=r[11], bytes=r[12], failure_kind=r[13],
        error_log=r[14]) for r in rows)


def result_records(conn: Conn, trace_id: str, notes: Notes) -> tuple[ResultRecord, ...]:
    """The trace's spatial_join_results rows, by partition."""
    try:
        rows = conn.execute(
            f"SELECT partition_key, result_uri, rows, bytes, checksum_sha256, contract, "
            f"materialized_at FROM {RESULTS_TABLE} WHERE trace_id = %s ORDER BY partition_key",
            (trace_id,)).fetchall()
    except psycopg.Error as exc:
        notes.add(f"{RESULTS_TABLE} rows", exc)
        return ()
    return tuple(ResultRecord(partition=r[0], uri=r[1], rows=int(r[2]), bytes=int(r[3]),
                              sha256=r[4], contract=r[5], materialized_at=r[6]) for r in rows)


def pgstattuple_schema(conn: Conn) -> str | None:
    """The schema pgstattuple is installed in, or None (diagnosis never installs it)."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pgstattuple'").fetchone()
    return None if row is None else str(row[0])


def quoted_name(table: str) -> str:
    """``schema.Table`` → ``"schema"."Table"``: resolved as the worker's sql.Identifier is."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


_TABLE_QUERY: Final = """
SELECT c.oid, n.nspname, c.relname, c.relpages, c.reltuples,
       pg_table_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid),
       s.last_analyze, s.last_autoanalyze, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = to_regclass(%s)
"""

_INDEX_QUERY: Final = """
SELECT ic.relname, am.amname,
       ARRAY(SELECT a.attname::text
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord),
       pg_relation_size(i.indexrelid), i.indisvalid, coalesce(x.indexdef, ''), i.indexrelid
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_am AS am ON am.oid = ic.relam
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
LEFT JOIN pg_indexes AS x ON x.schemaname = n.nspname AND x.indexname = ic.relname
WHERE i.indrelid = %s
ORDER BY ic.relname
"""


def table_facts(conn: Conn, table: str, role: TableRole, *, geometry_column: str | None,
                stattuple_schema: str | None, notes: Notes) -> TableFacts:
    """Sizes, statistics and indexes of ``table``; pgstattuple only where bloat is suspected."""
    try:
        row = conn.execute(_TABLE_QUERY, (quoted_name(table),)).fetchone()
    except psycopg.Error as exc:
        notes.add(f"table {table}", exc)
        return TableFacts(role=role, table=table, geometry_column=geometry_column)
    if row is None:
        return TableFacts(role=role, table=table, geometry_column=geometry_column)
    oid = int(row[0])
    index_rows = conn.execute(_INDEX_QUERY, (oid,)).fetchall()
    facts = TableFacts(
        role=role, table=table, qualified=f"{row[1]}.{row[2]}", geometry_column=geometry_column,
        relpages=int(row[3]), reltuples=float(row[4]), table_bytes=int(row[5]),
        indexes_bytes=int(row[6]), total_bytes=int(row[7]), last_analyze=row[8],
        last_autoanalyze=row[9], n_live_tup=row[10], n_dead_tup=row[11],
        n_mod_since_analyze=row[12],
        indexes=tuple(IndexFacts(name=r[0], method=r[1], columns=tuple(r[2]), bytes=int(r[3]),
                                 valid=bool(r[4]), definition=r[5]) for r in index_rows))
    if stattuple_schema is None or not _bloat_suspected(facts):
        return facts
    return _with_stattuple(conn, facts, oid, {r[0]: int(r[6]) for r in index_rows},
                           stattuple_schema, notes)


def _bloat_suspected(table: TableFacts) -> bool:
    ratio = table.index_ratio
    return (ratio is not None and ratio > findings.INDEX_RATIO_LIMIT
            and table.indexes_bytes >= findings.BLOAT_MIN_INDEX_BYTES)


def _with_stattuple(conn: Conn, table: TableFacts, oid: int, index_oids: dict[str, int],
                    schema: str, notes: Notes) -> TableFacts:
    """pgstattuple of every index, pgstattuple_approx of the heap (a visibility-map read)."""
    function = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("pgstattuple"))
    approx = sql.SQL("{}.{}").format(sql.Identifier(schema),
                                     sql.Identifier("pgstattuple_approx"))
    indexes = []
    for ix in table.indexes:
        try:
            row = conn.execute(sql.SQL("SELECT free_percent, dead_tuple_percent FROM {}(%s::oid"
                                       "::regclass)").format(function),
                               (index_oids[ix.name],)).fetchone()
        except psycopg.Error as exc:  # GIN and SP-GiST are not supported; privileges
            notes.add(f"pgstattuple({ix.name})", exc)
            indexes.append(ix)
            continue
        assert row is not None
        indexes.append(replace(ix, free_percent=float(row[0]), dead_tuple_percent=float(row[1])))
    heap_free = heap_dead = None
    try:
        row = conn.execute(sql.SQL("SELECT approx_free_percent, dead_tuple_percent FROM {}("
                                   "%s::oid::regclass)").format(approx), (oid,)).fetchone()
        if row is not None:
            heap_free, heap_dead = float(row[0]), float(row[1])
    except psycopg.Error as exc:
        notes.add(f"pgstattuple_approx({table.qualified})", exc)
    return replace(table, indexes=tuple(indexes), heap_free_percent=heap_free,
                   heap_dead_tuple_percent=heap_dead)


def explain(conn: Conn, query: JoinQuery, *, partition: str, reason: str, timeout_s: float,
            analyze: bool = True) -> PlanFacts:
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the worker's exact cursor, rolled back.

    The worker reads through a server-side cursor (DECLARE), which the planner
    optimizes for the first rows (cursor_tuple_fraction), so the cursor is what
    is explained, with the worker's settings: read only, statement timeout,
    JIT off. When ANALYZE runs past the timeout, the estimated plan is shown.
    """
    base = PlanFacts(partition=partition, reason=reason, statement_timeout_s=timeout_s)
    if analyze:
        try:
            return _explain(conn, query, base, timeout_s, analyze=True)
        except pg_errors.QueryCanceled:
            base = replace(base, timed_out=True)
        except (psycopg.Error, PlanFormatError) as exc:
            return replace(base, error=f"{type(exc).__name__}: {exc}")
    try:
        return _explain(conn, query, base, timeout_s, analyze=False)
    except (psycopg.Error, PlanFormatError) as exc:
        return replace(base, error=f"{type(exc).__name__}: {exc}")


def _explain(conn: Conn, query: JoinQuery, base: PlanFacts, timeout_s: float, *,
             analyze: bool) -> PlanFacts:
    options = sql.SQL("ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON")
    statement = sql.SQL("EXPLAIN ({}) DECLARE {} BINARY CURSOR FOR {}").format(
        options, sql.Identifier(EXPLAIN_CURSOR), query.statement)
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %s, true)",
                     (str(max(1, int(timeout_s * 1000))),))
        conn.execute("SET LOCAL jit = off")
        row = conn.execute(statement, query.params).fetchone()
    assert row is not None
    parsed = parse_plan(row[0])
    return replace(base, analyzed=analyze, planning_ms=parsed.planning_ms,
                   execution_ms=parsed.execution_ms, scans=parsed.scans,
                   shared_hit_blocks=parsed.shared_hit_blocks,
                   shared_read_blocks=parsed.shared_read_blocks, temp_blocks=parsed.temp_blocks,
                   plan=row[0])
