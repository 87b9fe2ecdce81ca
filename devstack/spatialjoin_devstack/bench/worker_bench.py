"""`spatialjoin bench worker`: the worker path against DuckDB and bare PostGIS, in one run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .baselines import bare_partition_queries, duckdb_join
from .harness import BenchWorld, prepare_dataset, run_job, running_stack


def bench_scale(settings: dict[str, Any], scale: str, seed: int, rounds: int,
                log_dir: Path) -> dict[str, Any]:
    """Every figure for one dataset scale."""
    url = prepare_dataset(settings["postgis"]["url"], scale, seed)
    world = BenchWorld.create(settings, url)
    job = run_job(world, log_dir, label=f"{scale}-zstd-c8")
    snappy = run_job(world, log_dir, label=f"{scale}-snappy-c8",
                     output={"compression": "snappy"})
    sequential = run_job(world, log_dir, label=f"{scale}-zstd-c1", concurrency=1)
    bare = bare_partition_queries(url, world.tasks())
    duck = duckdb_join(url, rounds)
    overheads = {p: sequential["partitions"][p]["task_ms"] / 1000 / bare[p] for p in bare
                 if bare[p] > 0}
    return {
        "scale": scale, "seed": seed,
        "worker_job_s": job["seconds"], "worker_cpu_s": job["worker_cpu_seconds"],
        "duckdb_join_s": duck["seconds"], "duckdb_rounds_s": duck["rounds"],
        "worker_vs_duckdb": job["seconds"] / duck["seconds"],
        "rows": job["rows"], "duckdb_rows": duck["rows"],
        "peak_rss_mb": job["peak_rss_mb"],
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
        report: Any = print) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with running_stack() as settings, tempfile.TemporaryDirectory() as logs:
        for scale in scales:
            report(f"benchmarking scale {scale} ...")
            figures[scale] = bench_scale(settings, scale, seed, rounds, Path(logs))
    if "small" in figures and "ref" in figures:
        figures["rss_growth_small_to_ref"] = (
            figures["ref"]["peak_rss_mb"] / figures["small"]["peak_rss_mb"] - 1)
    (out_dir / "worker.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    return figures
