"""Database contracts on real PostGIS: the idempotent migration and the sample dataset load."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from spatialjoin_cli import dataset_cmd, db_cmd
from spatialjoin_contracts import ddl

pytestmark = pytest.mark.integration

cli = typer.Typer()
cli.add_typer(db_cmd.app, name="db")
cli.add_typer(dataset_cmd.app, name="dataset")


def _columns(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def test_migrate_runs_twice_without_error(db_schema: tuple[str, str]) -> None:
    schema, url = db_schema
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "migrate"], env={"SPATIALJOIN_DATABASE_URL": url})
    assert first.exit_code == 0, first.output
    assert "applied: 0001_jobs_and_results" in first.output
    assert "0002_finished_at_index" in first.output
    second = runner.invoke(cli, ["db", "migrate"], env={"SPATIALJOIN_DATABASE_URL": url})
    assert second.exit_code == 0, second.output
    assert "up to date" in second.output
    # Even the raw statements are idempotent, not just the bookkeeping.
    with psycopg.connect(url) as conn, conn.transaction():
        for statement in ddl.migration_statements():
            conn.execute(statement)
        jobs = _columns(conn, schema, ddl.JOBS_TABLE)
        results = _columns(conn, schema, ddl.RESULTS_TABLE)
    for column in (
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
    ):
        assert column in jobs, column
    assert jobs["started_at"] == "timestamp with time zone"
    for column in (
        "trace_id",
        "partition_key",
        "result_uri",
        "result_blob",
        "checksum_sha256",
        "materialized_at",
    ):
        assert column in results, column


def test_concurrent_migrations_serialize(db_schema: tuple[str, str]) -> None:
    _, url = db_schema
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
                applied.append(ddl.migrate(cur))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(applied) == [[], [], [], ["0001_jobs_and_results", "0002_finished_at_index"]]


def test_tables_enforce_the_exactly_once_contract(db_schema: tuple[str, str]) -> None:
    _, url = db_schema
    with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        ddl.migrate(cur)
    with psycopg.connect(url, autocommit=True) as conn:
        queue = (
            f"INSERT INTO {ddl.JOBS_TABLE} (job_id, trace_id, partition_key) "
            "VALUES (%s, %s, %s) ON CONFLICT (trace_id, partition_key) DO NOTHING"
        )
        assert conn.execute(queue, ("uid-1", "t-1", "p00")).rowcount == 1
        assert conn.execute(queue, ("uid-2", "t-1", "p00")).rowcount == 0
        result = (
            f"INSERT INTO {ddl.RESULTS_TABLE} (trace_id, partition_key, result_uri, "
            "checksum_sha256, contract, rows, bytes) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (trace_id, partition_key) DO NOTHING"
        )
        row = ("t-1", "p00", "s3://bkt/t-1/p00.parquet", "ab" * 32, "v2.1", 10, 999)
        assert conn.execute(result, row).rowcount == 1
        assert conn.execute(result, row).rowcount == 0
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(f"UPDATE {ddl.JOBS_TABLE} SET status = 'lost'")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                result.replace("result_uri", "result_blob"),
                ("t-2", "p00", None, "ab" * 32, "v2.1", 0, 0),
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(result, ("t-3", "p00", "s3://bkt/x", "not-a-checksum", "v2.1", 0, 0))
        plan = conn.execute(
            f"EXPLAIN (FORMAT JSON) SELECT status FROM {ddl.JOBS_TABLE} WHERE trace_id = 't-1'"
        ).fetchone()
    assert plan is not None
    text = json.dumps(plan[0])
    assert f"{ddl.JOBS_TABLE}_pkey" in text or "Seq Scan" in text  # tiny table: either is fine


def _plan_nodes(plan: dict[str, Any]) -> list[str]:
    nodes = [f"{plan['Node Type']}:{plan.get('Index Name', '')}"]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def test_dataset_generate_small_loads_in_under_a_minute(
    db_schema: tuple[str, str], tmp_path: Any
) -> None:
    schema, url = db_schema
    map_file = tmp_path / "partition-map.yaml"
    started = time.monotonic()
    result = CliRunner().invoke(
        cli,
        [
            "dataset",
            "generate",
            "--scale",
            "small",
            "--seed",
            "7",
            "--partition-map-out",
            str(map_file),
        ],
        env={"SPATIALJOIN_DATABASE_URL": url},
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 60, f"dataset generate --scale small took {elapsed:.1f}s"
    assert map_file.read_text().startswith("partitionMap:")
    with psycopg.connect(url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM domain_a_polygons), (SELECT count(*) FROM "
            "domain_b_points), (SELECT count(DISTINCT spatial_partition) FROM domain_a_polygons),"
            " (SELECT count(*) FROM spatial_partitions)"
        ).fetchone()
        assert counts == (5_000, 200_000, 12, 12)
        vertices = conn.execute(
            "SELECT min(ST_NPoints(geom) - 1), max(ST_NPoints(geom) - 1), "
            "bool_and(ST_IsValid(geom)), count(DISTINCT ST_SRID(geom)) FROM domain_a_polygons"
        ).fetchone()
        assert vertices is not None
        assert vertices[0] >= 8 and vertices[1] <= 64 and vertices[2] is True
        assert vertices[3] == 1
        indexes = {
            str(r[0])
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        assert {
            "domain_a_polygons_geom_gist",
            "domain_b_points_geom_gist",
            "domain_a_polygons_partition_idx",
        } <= indexes
        analyzed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = %s "
            "AND last_analyze IS NOT NULL",
            (schema,),
        ).fetchone()
        assert analyzed == (3,)
        crossing = conn.execute(
            "SELECT count(*) FROM domain_a_polygons a JOIN spatial_partitions p "
            "ON p.name = a.spatial_partition WHERE NOT ST_Within(a.geom, p.bbox)"
        ).fetchone()
        assert crossing is not None and crossing[0] > 0
        # The design's query template uses the GiST indexes, no Seq Scan on the polygons.
        (raw,) = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT a.id, b.id, ST_Intersection(a.geom, b.geom) "
            "FROM domain_a_polygons a JOIN domain_b_points b ON ST_Intersects(a.geom, b.geom) "
            "WHERE a.spatial_partition = 'p05' "
            "AND a.geom && ST_MakeEnvelope(-110, 33, -95, 41, 4326)"
        ).fetchone()  # type: ignore[misc]
        plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
        nodes = _plan_nodes(plan)
        assert not any(n.startswith("Seq Scan") for n in nodes), nodes
        assert any("domain_b_points_geom_gist" in n for n in nodes), nodes
        rows = conn.execute(
            "SELECT count(*) FROM domain_a_polygons a JOIN domain_b_points b "
            "ON ST_Intersects(a.geom, b.geom)"
        ).fetchone()
    assert rows is not None and rows[0] > 50_000  # clustered data: plenty of matches
