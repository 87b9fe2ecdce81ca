"""`spatialjoin worker`: run one join worker with settings from the environment."""

from __future__ import annotations

import typer


def worker() -> None:
    """Consume tasks, join in PostGIS, write Parquet to S3 (settings: SPATIALJOIN_* env)."""
    from pydantic import ValidationError

    from spatialjoin_worker.app import run
    from spatialjoin_worker.settings import WorkerSettings

    try:
        settings = WorkerSettings()  # type: ignore[call-arg]  # read from the environment
    except ValidationError as exc:
        for error in exc.errors():
            name = "SPATIALJOIN_" + "_".join(str(p) for p in error["loc"]).upper()
            typer.echo(f"worker settings: {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc
    run(settings)
