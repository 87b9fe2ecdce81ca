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
    seed: int = typer.Option(42, "--seed"),
    rounds: int = typer.Option(3, "--rounds", help="DuckDB rounds (median reported)."),
    out: Path = typer.Option(Path("bench-results"), "--out",  # noqa: B008
                             help="Folder for worker.json."),
) -> None:
    """The 12-partition job through the worker vs DuckDB and bare PostGIS, with memory."""
    from spatialjoin_devstack.bench.worker_bench import run

    figures = run(scale, seed, rounds, out, report=console.print)
    console.print(_table(figures))
    console.print(f"figures written to {out / 'worker.json'}")


def _table(figures: dict[str, Any]) -> Table:
    table = Table("figure", *[s for s in figures if isinstance(figures[s], dict)])
    scales = [figures[s] for s in figures if isinstance(figures[s], dict)]
    rows = [
        ("result rows", "rows", "{:,}"), ("worker job (s, 12 partitions, c=8)", "worker_job_s",
                                          "{:.2f}"),
        ("worker CPU (s)", "worker_cpu_s", "{:.2f}"), ("DuckDB join (s, 2 threads)",
                                                       "duckdb_join_s", "{:.2f}"),
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
