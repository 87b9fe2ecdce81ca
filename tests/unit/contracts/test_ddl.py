"""The DDL: idempotent statements, migrations recorded once, under an advisory lock."""

from __future__ import annotations

import re
from typing import Any

import pytest

from spatialjoin_contracts import ddl

pytestmark = pytest.mark.unit


class FakeCursor:
    """Records statements; answers the migrations-table query from its own state."""

    def __init__(self, applied: set[str] | None = None) -> None:
        self.applied = set(applied or ())
        self.statements: list[str] = []
        self._rows: list[tuple[object, ...]] = []

    def execute(self, query: str, params: tuple[object, ...] = ()) -> None:
        self.statements.append(" ".join(query.split()))
        if query.startswith(f"SELECT id FROM {ddl.MIGRATIONS_TABLE}"):
            self._rows = [(m,) for m in sorted(self.applied)]
        elif query.startswith(f"INSERT INTO {ddl.MIGRATIONS_TABLE}"):
            self.applied.add(str(params[0]))

    def fetchall(self) -> list[tuple[object, ...]]:
        return self._rows


def test_first_run_applies_every_migration_and_records_it() -> None:
    cursor = FakeCursor()
    assert ddl.migrate(cursor) == [m.id for m in ddl.MIGRATIONS]
    assert cursor.applied == {m.id for m in ddl.MIGRATIONS}
    assert cursor.statements[0] == "SELECT pg_advisory_xact_lock(%s)"


def test_second_run_applies_nothing() -> None:
    cursor = FakeCursor({m.id for m in ddl.MIGRATIONS})
    assert ddl.migrate(cursor) == []
    assert not any(s.startswith("CREATE TABLE IF NOT EXISTS spatial_") for s in cursor.statements)


@pytest.mark.parametrize("statement", ddl.migration_statements())
def test_every_statement_is_idempotent(statement: str) -> None:
    text = " ".join(statement.split())
    assert re.match(r"(CREATE (TABLE|INDEX) IF NOT EXISTS|COMMENT ON)", text), text


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        (
            ddl.JOBS_TABLE,
            [
                "job_id",
                "trace_id",
                "partition_key",
                "status",
                "attempt",
                "worker",
                "started_at",
                "finished_at",
                "rows",
                "bytes",
                "error_log",
            ],
        ),
        (
            ddl.RESULTS_TABLE,
            [
                "trace_id",
                "partition_key",
                "result_uri",
                "result_blob",
                "checksum_sha256",
                "materialized_at",
            ],
        ),
    ],
)
def test_tables_have_the_contract_columns(table: str, columns: list[str]) -> None:
    create = next(
        s for s in ddl.migration_statements() if f"CREATE TABLE IF NOT EXISTS {table} " in s
    )
    for column in columns:
        assert re.search(rf"^\s+{column}\s", create, re.MULTILINE), column


@pytest.mark.parametrize("table", [ddl.JOBS_TABLE, ddl.RESULTS_TABLE])
def test_primary_key_is_trace_id_then_partition_key(table: str) -> None:
    create = next(
        s for s in ddl.migration_statements() if f"CREATE TABLE IF NOT EXISTS {table} " in s
    )
    assert "PRIMARY KEY (trace_id, partition_key)" in create


def test_status_check_lists_every_task_status() -> None:
    create = ddl.migration_statements()[0]
    for status in ddl.TaskStatus:
        assert f"'{status.value}'" in create


def test_migration_ids_are_unique_and_ordered() -> None:
    ids: list[Any] = [m.id for m in ddl.MIGRATIONS]
    assert ids == sorted(set(ids))
