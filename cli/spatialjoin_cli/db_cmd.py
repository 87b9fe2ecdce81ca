"""`spatialjoin db migrate`: create the job and result tables (idempotent)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Database tables shared by the operator and the workers.", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SPATIALJOIN_DATABASE_URL",
        show_envvar=True,
        help="libpq connection URL.",
    ),
]


def require_url(database_url: str | None) -> str:
    """The URL, or a clear error naming the variable that should hold it."""
    if not database_url:
        typer.echo("set SPATIALJOIN_DATABASE_URL or pass --database-url", err=True)
        raise typer.Exit(2)
    return database_url


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply the migrations not applied yet; safe to run again and concurrently."""
    import psycopg

    from spatialjoin_contracts import ddl

    url = require_url(database_url)
    try:
        with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
            applied = ddl.migrate(cur)
    except psycopg.Error as exc:
        typer.echo(f"migration failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    if applied:
        typer.echo(f"applied: {', '.join(applied)}")
    else:
        typer.echo("database schema is up to date")


@app.command()
def sql() -> None:
    """Print the DDL statements (for review or psql)."""
    from spatialjoin_contracts import ddl

    for statement in ddl.migration_statements():
        typer.echo(statement.strip() + ";\n")
