"""`spatialjoin bench worker`: print the worker benchmark's table and write its JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def worker(
    scale: list[str] = typer.Option(["small"], "--scale",  # noqa: B008
                                    help="small, ref or large; repeat for several."),
    engine: list[str] = typer.Option(["postgis"], "--engine",  # noqa: B008
                                     help="postgis or vectorized; repeat for both."),
    seed: int = typer.Option(42, "--seed"),
    rounds: int = typer.Option(3, "--rounds", help="DuckDB rounds (median reported)."),
    out: Path = typer.Option(Path("bench-results"), "--out",  # noqa: B008
                             help="Folder for worker.json."),
) -> None:
    """The 12-partition job through the worker per engine vs DuckDB, the lean plan and bare
    PostGIS, with CPU seconds and memory."""
    from spatialjoin_devstack.bench.worker_bench import ENGINES, run

    unknown = sorted(set(engine) - set(ENGINES))
    if unknown:
        raise typer.BadParameter(f"unknown engine(s) {unknown}; expected one of {ENGINES}",
                                 param_hint="--engine")
    figures = run(scale, seed, rounds, out, report=console.print,
                  engines=tuple(dict.fromkeys(engine)))
    console.print(_engines_table(figures))
    if any("worker_job_s" in s for s in _scales(figures).values()):
        console.print(_postgis_table(figures))
    console.print(f"figures written to {out / 'worker.json'}")


def _scales(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: value for name, value in figures.items() if isinstance(value, dict)}


def _engines_table(figures: dict[str, Any]) -> Table:
    """Per scale: the lean plan and DuckDB, then each engine's time, CPU, memory and ratios."""
    table = Table("figure", *_scales(figures))
    scales = list(_scales(figures).values())

    def row(label: str, get: Any, fmt: str) -> None:
        cells = []
        for s in scales:
            try:
                cells.append(fmt.format(get(s)))
            except (KeyError, TypeError):
                cells.append("-")
        table.add_row(label, *cells)

    row("DuckDB join (s, 2 threads, loaded)", lambda s: s["duckdb_join_s"], "{:.2f}")
    row("lean plan (s, 2 threads, read + join + write)", lambda s: s["lean"]["seconds"],
        "{:.2f}")
    row("lean plan CPU (s, process)", lambda s: s["lean"]["cpu_s"], "{:.2f}")
    row("lean plan database CPU (s)", lambda s: s["lean"]["database_cpu_s"], "{:.2f}")
    row("lean plan machine busy CPU (s, every process)", lambda s: s["lean"]["machine_cpu_s"],
        "{:.2f}")
    row("lean plan peak RSS (MB)", lambda s: s["lean"]["peak_rss_mb"], "{:.0f}")
    row("lean plan / DuckDB", lambda s: s["lean"]["vs_duckdb"], "{:.2f}x")
    engines = sorted({e for s in scales for e in s.get("engines", {})})
    for engine in engines:
        def get(s: dict[str, Any], key: str, engine: str = engine) -> Any:
            return s["engines"][engine][key]
        row(f"{engine}: result rows", lambda s, g=get: g(s, "rows"), "{:,}")
        row(f"{engine}: job (s, 12 partitions, c=8)", lambda s, g=get: g(s, "job_s"), "{:.2f}")
        row(f"{engine}: publish → first claim (s)", lambda s, g=get: g(s, "first_claim_s"),
            "{:.2f}")
        row(f"{engine}: worker CPU (s)", lambda s, g=get: g(s, "worker_cpu_s"), "{:.2f}")
        row(f"{engine}: database CPU (s)", lambda s, g=get: g(s, "database_cpu_s"), "{:.2f}")
        row(f"{engine}: S3 + Kafka CPU (s)", lambda s, g=get: g(s, "s3_kafka_cpu_s"), "{:.2f}")
        row(f"{engine}: machine busy CPU (s, every process)",
            lambda s, g=get: g(s, "machine_cpu_s"), "{:.2f}")
        row(f"{engine}: peak worker RSS (MB)", lambda s, g=get: g(s, "peak_rss_mb"), "{:.0f}")
        row(f"{engine}: job / lean plan (target <= 1.5)" if engine == "vectorized" else
            f"{engine}: job / lean plan", lambda s, g=get: g(s, "vs_lean"), "{:.2f}x")
        row(f"{engine}: job / DuckDB", lambda s, g=get: g(s, "vs_duckdb"), "{:.2f}x")
    row("postgis job / vectorized job", lambda s: s["vectorized_speedup_over_postgis"],
        "{:.2f}x")
    row("same rows per partition", lambda s: s["engines_rows_equal"], "{}")
    return table


def _postgis_table(figures: dict[str, Any]) -> Table:
    """The postgis engine's own targets (task overhead, compression, memory growth)."""
    table = Table("postgis engine", *[n for n, s in _scales(figures).items()
                                      if "worker_job_s" in s])
    scales = [s for s in _scales(figures).values() if "worker_job_s" in s]
    rows = [
        ("worker / DuckDB (target <= 1.0)", "worker_vs_duckdb", "{:.2f}x"),
        ("task / bare query, median (target <= 1.25)", "task_overhead_median", "{:.2f}x"),
        ("task / bare query, worst", "task_overhead_max", "{:.2f}x"),
        ("peak worker RSS (MB, target < 400)", "peak_rss_mb", "{:.0f}"),
        ("zstd bytes", "zstd_bytes", "{:,}"), ("snappy bytes", "snappy_bytes", "{:,}"),
        ("zstd MB/s written", "zstd_mb_per_s", "{:.2f}"),
        ("snappy MB/s written", "snappy_mb_per_s", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        table.add_row(label, *[fmt.format(s[key]) for s in scales])
    if "rss_growth_small_to_ref" in figures:
        table.add_row("RSS growth small → ref (target < 20 %)",
                      f"{figures['rss_growth_small_to_ref']:.0%}")
    return table
