"""`spatialjoin stack up|down|status|env`: the real local stack for development and tests."""

from __future__ import annotations

import shlex

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Run the local stack: Kubernetes API, Kafka protocol, PostGIS, S3.",
                  no_args_is_help=True)
console = Console()


@app.command()
def up() -> None:
    """Install (idempotent) and start every component on 127.0.0.1; print start times."""
    from spatialjoin_devstack import stack

    stack.up(report=lambda line: console.print(line))
    console.print("stack is up: `eval \"$(spatialjoin stack env)\"` to use it")


@app.command()
def down() -> None:
    """Stop every process the stack started, by pid."""
    from spatialjoin_devstack import stack

    stack.down(report=lambda line: console.print(line))


@app.command()
def install() -> None:
    """Install every component without starting anything (for CI caches)."""
    from spatialjoin_devstack import stack

    stack.install(report=lambda line: console.print(line))


@app.command()
def status() -> None:
    """Show each component's process and health; exit 1 if any is unhealthy."""
    from spatialjoin_devstack import stack

    rows = stack.status()
    table = Table("component", "running", "healthy", "settings")
    for row in rows:
        table.add_row(row.name, _mark(row.running), _mark(row.healthy), row.detail)
    console.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print the running stack's connection settings as shell exports."""
    from spatialjoin_devstack import stack

    for key, value in sorted(stack.env().items()):
        typer.echo(f"export {key}={shlex.quote(value)}")


def _mark(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]no[/red]"
