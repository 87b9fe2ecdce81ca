"""The partition join as SQL: identifiers quoted, every value a bound parameter.

The seed's query, made cheaper without changing its result: the
intersection of a polygon with a point it intersects is the point itself, so
ST_Intersection is computed only for non-point features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from psycopg import sql

from spatialjoin_contracts.models import BBox
from spatialjoin_contracts.models.job import JoinSource, Predicate

from .settings import InvalidGeometryPolicy

METERS_PER_DEGREE = 111_320.0

# Columns of the join query: one row per polygon with its matches packed in order.
COLUMNS = ("domain_id", "domain_geometry_valid", "feature_id_type", "feature_ids", "geometries")


@dataclass(frozen=True)
class JoinQuery:
    statement: sql.Composed
    params: tuple[object, ...]


class GeoParquetNeedsVectorized(ValueError):
    """A side of the join names GeoParquet, which only the vectorized engine reads."""


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def source_tables(source: JoinSource) -> tuple[str, str]:
    """The polygon and point tables; GeoParquetNeedsVectorized when a side has none."""
    for side, spec in (("polygons", source.polygons), ("points", source.points)):
        if spec.table is None:
            raise GeoParquetNeedsVectorized(
                f"spec.source.{side} reads GeoParquet ({spec.geoparquet}), which only the "
                f"vectorized engine reads: run this job on a WorkerPool with engine: vectorized")
    assert source.polygons.table is not None and source.points.table is not None
    return source.polygons.table, source.points.table


def degrees_for(distance_m: float, bbox: BBox) -> float:
    """A distance in degrees at least as long as ``distance_m`` anywhere in ``bbox``.

    Used as an index-friendly planar prefilter before the exact geography test;
    longitude degrees shrink with latitude, so take the bbox's worst latitude.
    """
    worst_lat = min(89.0, max(abs(bbox.min_lat), abs(bbox.max_lat)))
    return distance_m / (METERS_PER_DEGREE * max(math.cos(math.radians(worst_lat)), 0.01))


def build_join(source: JoinSource, partition_key: str, bbox: BBox,
               policy: InvalidGeometryPolicy) -> JoinQuery:
    """The join of one partition, ordered by (domain_id, feature_id) for byte-stable output."""
    poly, pts = source.polygons, source.points
    poly_table, pt_table = source_tables(source)
    fields = {
        "poly_table": _table(poly_table), "pt_table": _table(pt_table),
        "pid": sql.Identifier(poly.id_column), "pgeom": sql.Identifier(poly.geometry_column),
        "ppart": sql.Identifier(poly.partition_column),
        "fid": sql.Identifier(pts.id_column), "fgeom": sql.Identifier(pts.geometry_column),
    }
    keep_invalid = sql.SQL("TRUE") if policy is InvalidGeometryPolicy.MAKE_VALID else sql.SQL(
        "ST_IsValid(p.{pgeom})").format(**fields)
    params: list[object] = [partition_key, *bbox.as_tuple()]
    if source.predicate.type is Predicate.DWITHIN:
        distance = float(source.predicate.distance_meters or 0.0)
        match = sql.SQL("ST_DWithin(a.geom, b.{fgeom}, %s) AND "
                        "ST_DWithin(a.geom::geography, b.{fgeom}::geography, %s)").format(**fields)
        params += [degrees_for(distance, bbox), distance]
        geometry = sql.SQL("b.{fgeom}").format(**fields)  # the matched point itself
    else:
        match = sql.SQL("ST_Intersects(a.geom, b.{fgeom})").format(**fields)
        geometry = sql.SQL(
            "CASE WHEN GeometryType(b.{fgeom}) = 'POINT' THEN b.{fgeom} "
            "ELSE ST_Intersection(a.geom, b.{fgeom}) END").format(**fields)
    # One row per polygon, not per match: the matches' ids travel as packed
    # big-endian int8 and their geometries as one collection WKB, both ordered
    # by feature id. PostgreSQL then formats a few thousand rows instead of
    # millions, and the worker unpacks them with numpy (see groups.py). The
    # LATERAL aggregate sorts each polygon's matches in memory; grouping the
    # whole join instead made the planner sort every match (and its polygon)
    # on disk.
    statement = sql.SQL("""
        WITH a AS MATERIALIZED (
            SELECT id, valid, CASE WHEN valid THEN geom ELSE ST_MakeValid(geom) END AS geom
            FROM (SELECT p.{pid} AS id, p.{pgeom} AS geom, ST_IsValid(p.{pgeom}) AS valid
                  FROM {poly_table} AS p
                  WHERE p.{ppart} = %s
                    AND p.{pgeom} && ST_MakeEnvelope(%s, %s, %s, %s, 4326)
                    AND p.{pgeom} IS NOT NULL AND NOT ST_IsEmpty(p.{pgeom})
                    AND {keep_invalid}) AS source
        )
        SELECT a.id, a.valid, m.first_id, m.ids, m.geometries
        FROM a CROSS JOIN LATERAL (
            SELECT min(b.{fid}) AS first_id,
                   string_agg(int8send(b.{fid}::int8), ''::bytea ORDER BY b.{fid}) AS ids,
                   ST_AsBinary(ST_Collect({geometry} ORDER BY b.{fid})) AS geometries
            FROM {pt_table} AS b
            WHERE {match} AND b.{fgeom} IS NOT NULL
        ) AS m
        WHERE m.ids IS NOT NULL
        ORDER BY a.id
    """).format(keep_invalid=keep_invalid, geometry=geometry, match=match, **fields)
    return JoinQuery(statement, tuple(params))


def build_invalid_count(source: JoinSource, partition_key: str, bbox: BBox) -> JoinQuery:
    """How many of the partition's polygons are invalid, and a sample of their ids."""
    poly = source.polygons
    statement = sql.SQL("""
        SELECT count(*), (array_agg({pid} ORDER BY {pid}))[1:10]
        FROM {table}
        WHERE {ppart} = %s AND {pgeom} && ST_MakeEnvelope(%s, %s, %s, %s, 4326)
          AND NOT ST_IsValid({pgeom})
    """).format(pid=sql.Identifier(poly.id_column), table=_table(source_tables(source)[0]),
                ppart=sql.Identifier(poly.partition_column),
                pgeom=sql.Identifier(poly.geometry_column))
    return JoinQuery(statement, (partition_key, *bbox.as_tuple()))
