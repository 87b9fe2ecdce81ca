"""`spatialjoin bench worker`: the worker path per engine against its baselines, in one run.

Baselines measured in the same run (the machine is shared, so only ratios
against them mean anything): DuckDB's spatial join, each partition's bare
PostGIS query, and the lean in-process plan (lean_plan.py) the vectorized
engine is held to.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from . import lean_plan
from .baselines import bare_partition_queries, duckdb_join
from .harness import BenchWorld, prepare_dataset, run_job, running_stack

ENGINES = ("postgis", "vectorized")


def warm_up(url: str) -> None:
    """Read both tables and their GiST indexes once, so that the first timed run is not cold."""
    with psycopg.connect(url) as conn:
        for table in ("domain_a_polygons", "domain_b_points"):
            conn.execute(f"SELECT count(*), sum(ST_XMin(geom)) FROM {table}")
            conn.execute("SET enable_seqscan = off")  # the GiST index this time
            conn.execute(f"SELECT count(*) FROM {table} "
                         "WHERE geom && ST_MakeEnvelope(-180, -90, 180, 90, 4326)")
            conn.execute("RESET enable_seqscan")


def engine_figures(job: dict[str, Any], lean: dict[str, Any],
                   duck: dict[str, Any]) -> dict[str, Any]:
    cpu = job["worker_cpu_seconds"] + job["database_cpu_seconds"]
    return {
        "job_s": job["seconds"], "rows": job["rows"], "bytes": job["bytes"],
        "first_claim_s": job["first_claim_s"],
        "peak_rss_mb": job["peak_rss_mb"], "worker_cpu_s": job["worker_cpu_seconds"],
        "database_cpu_s": job["database_cpu_seconds"], "worker_plus_database_cpu_s": cpu,
        "s3_kafka_cpu_s": job["services_cpu_seconds"],
        "machine_cpu_s": job["machine_cpu_seconds"],
        "two_core_floor_s": cpu / 2,
        "vs_lean": job["seconds"] / lean["seconds"],
        "vs_duckdb": job["seconds"] / duck["seconds"],
        "task_s": {p: v["task_ms"] / 1000 for p, v in job["partitions"].items()},
    }


def bench_scale(settings: dict[str, Any], scale: str, seed: int, rounds: int,
                log_dir: Path, engines: tuple[str, ...] = ("postgis",)) -> dict[str, Any]:
    """Every figure for one dataset scale."""
    url = prepare_dataset(settings["postgis"]["url"], scale, seed)
    world = BenchWorld.create(settings, url)
    warm_up(url)
    jobs = {engine: run_job(world, log_dir, label=f"{scale}-{engine}-zstd-c8", engine=engine)
            for engine in engines}
    lean = lean_plan.measure(url, threads=2)
    duck = duckdb_join(url, rounds)
    figures: dict[str, Any] = {
        "scale": scale, "seed": seed,
        "duckdb_join_s": duck["seconds"], "duckdb_rounds_s": duck["rounds"],
        "duckdb_rows": duck["rows"],
        "lean": {"seconds": lean["seconds"], "read_s": lean["read_seconds"],
                 "cpu_s": lean["cpu_seconds"], "database_cpu_s": lean["database_cpu_seconds"],
                 "machine_cpu_s": lean["machine_cpu_seconds"], "peak_rss_mb": lean["peak_rss_mb"],
                 "rows": lean["rows"], "vs_duckdb": lean["seconds"] / duck["seconds"]},
        "engines": {engine: engine_figures(job, lean, duck) for engine, job in jobs.items()},
    }
    if "postgis" in jobs:
        figures.update(postgis_figures(world, log_dir, scale, jobs["postgis"], duck, url))
    if "postgis" in jobs and "vectorized" in jobs:
        figures["vectorized_speedup_over_postgis"] = (
            jobs["postgis"]["seconds"] / jobs["vectorized"]["seconds"])
        figures["engines_rows_equal"] = (
            {p: v["rows"] for p, v in jobs["postgis"]["partitions"].items()}
            == {p: v["rows"] for p, v in jobs["vectorized"]["partitions"].items()})
    return figures


def postgis_figures(world: BenchWorld, log_dir: Path, scale: str, job: dict[str, Any],
                    duck: dict[str, Any], url: str) -> dict[str, Any]:
    """The postgis engine's own figures: compression, task overhead over the bare query."""
    snappy = run_job(world, log_dir, label=f"{scale}-snappy-c8",
                     output={"compression": "snappy"})
    sequential = run_job(world, log_dir, label=f"{scale}-zstd-c1", concurrency=1)
    bare = bare_partition_queries(url, world.tasks())
    overheads = {p: sequential["partitions"][p]["task_ms"] / 1000 / bare[p] for p in bare
                 if bare[p] > 0}
    return {
        "worker_job_s": job["seconds"], "worker_cpu_s": job["worker_cpu_seconds"],
        "worker_vs_duckdb": job["seconds"] / duck["seconds"],
        "rows": job["rows"], "peak_rss_mb": job["peak_rss_mb"],
        "bare_query_s": bare, "sequential_task_s": {
            p: v["task_ms"] / 1000 for p, v in sequential["partitions"].items()},
        "task_overhead_median": sorted(overheads.values())[len(overheads) // 2],
        "task_overhead_max": max(overheads.values()),
        "zstd_bytes": job["bytes"], "snappy_bytes": snappy["bytes"],
        "zstd_mb_per_s": job["bytes"] / 2**20 / job["seconds"],
        "snappy_mb_per_s": snappy["bytes"] / 2**20 / snappy["seconds"],
        "snappy_job_s": snappy["seconds"],
    }


def run(scales: list[str], seed: int, rounds: int, out_dir: Path,
        report: Any = print, engines: tuple[str, ...] = ("postgis",)) -> dict[str, Any]:
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engine(s) {sorted(unknown)}; expected {list(ENGINES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with running_stack() as settings, tempfile.TemporaryDirectory() as logs:
        for scale in scales:
            report(f"benchmarking scale {scale} ({', '.join(engines)}) ...")
            figures[scale] = bench_scale(settings, scale, seed, rounds, Path(logs), engines)
    if ("small" in figures and "ref" in figures and "peak_rss_mb" in figures["small"]
            and "peak_rss_mb" in figures["ref"]):
        figures["rss_growth_small_to_ref"] = (
            figures["ref"]["peak_rss_mb"] / figures["small"]["peak_rss_mb"] - 1)
    (out_dir / "worker.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    return figures
