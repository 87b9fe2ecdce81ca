"""`spatialjoin dataset generate`: load the seeded sample dataset into PostGIS."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .db_cmd import DatabaseUrl, require_url

app = typer.Typer(help="Seeded sample data for the spatial join.", no_args_is_help=True)
console = Console(stderr=True)


class ScaleName(StrEnum):
    SMALL = "small"
    REF = "ref"
    LARGE = "large"


def write_partition_map(path: Path) -> None:
    """The WorkerPool spec fragment ``{partitionMap: [...]}``: JSON for .json, else YAML."""
    from spatialjoin_contracts.partition_map import grid_partition_map, partition_map_document

    document = partition_map_document(grid_partition_map())
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False))


@app.command()
def generate(
    scale: Annotated[
        ScaleName,
        typer.Option(
            "--scale",
            help="small ~5k polygons/200k points, ref ~50k/2M, large ~50k/10M.",
        ),
    ] = ScaleName.SMALL,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same rows.")] = 42,
    partition_map_out: Annotated[
        Path | None,
        typer.Option(
            "--partition-map-out",
            help="Also write the matching WorkerPool partitionMap (.json or YAML).",
        ),
    ] = None,
    invalid_fraction: Annotated[
        float,
        typer.Option(
            "--invalid-fraction",
            min=0.0,
            max=1.0,
            help="Share of polygons made self-intersecting, to exercise geometry validation.",
        ),
    ] = 0.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Replace domain_a_polygons, domain_b_points and spatial_partitions with fresh data."""
    import psycopg

    from spatialjoin_contracts.dataset import SCALES
    from spatialjoin_contracts.dataset_load import load_dataset
    from spatialjoin_contracts.partition_map import grid_partition_map

    started = time.monotonic()
    sizes = SCALES[scale.value]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        polygons = progress.add_task("polygons", total=sizes.polygons)
        points = progress.add_task("points", total=sizes.points)
        indexes = progress.add_task("indexes + analyze", total=2)

        def tick(step: str, rows: int) -> None:
            target = {"polygons": polygons, "points": points}.get(step, indexes)
            progress.advance(target, rows if target != indexes else 1)

        try:
            with psycopg.connect(require_url(database_url)) as conn:
                report = load_dataset(
                    conn,
                    grid_partition_map(),
                    scale=scale.value,
                    seed=seed,
                    invalid_fraction=invalid_fraction,
                    progress=tick,
                )
        except psycopg.Error as exc:
            console.print(f"[red]loading failed:[/red] {exc}")
            raise typer.Exit(1) from exc
    if partition_map_out is not None:
        write_partition_map(partition_map_out)
        console.print(f"partition map written to {partition_map_out}")
    table = Table("partition", "polygons", title=f"{scale.value} dataset, seed {seed}")
    for name, count in report.polygons_per_partition.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    steps = ", ".join(f"{step} {secs:.1f}s" for step, secs in report.seconds.items())
    console.print(
        f"{report.polygons:,} polygons, {report.points:,} points loaded in "
        f"{time.monotonic() - started:.1f}s ({steps})"
    )
