"""PostGIS of the local stack: a GiST-indexed ST_Intersects uses the index."""

from __future__ import annotations

import json

import psycopg
import pytest

pytestmark = pytest.mark.integration


def _plan_nodes(plan: dict[str, object]) -> list[str]:
    nodes = [str(plan["Node Type"])]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        nodes.extend(_plan_nodes(child))
    return nodes


def test_st_intersects_uses_the_gist_index(db_schema: tuple[str, str]) -> None:
    _, url = db_schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE polys (id bigint PRIMARY KEY, geom geometry(Polygon, 4326))")
        conn.execute("""
            INSERT INTO polys
            SELECT g, ST_MakeEnvelope(x, y, x + 0.5, y + 0.5, 4326)
            FROM generate_series(1, 20000) AS g,
                 LATERAL (SELECT (g % 200) * 0.9 - 90 AS x, (g / 200) * 0.9 - 45 AS y) AS c
        """)
        conn.execute("CREATE INDEX polys_geom_gist ON polys USING gist (geom)")
        conn.execute("ANALYZE polys")
        query = ("SELECT id FROM polys WHERE ST_Intersects(geom, "
                 "ST_SetSRID(ST_MakePoint(%s, %s), 4326))")
        hits = conn.execute(query, (-89.8, -43.9)).fetchall()
        (raw,) = conn.execute("EXPLAIN (FORMAT JSON) " + query, (-89.8, -43.9)).fetchone()  # type: ignore[misc]
    plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
    nodes = _plan_nodes(plan)
    assert [row[0] for row in hits] == [200]
    assert any("Index Scan" in node or "Bitmap Index Scan" in node for node in nodes), nodes
    assert "Seq Scan" not in nodes
