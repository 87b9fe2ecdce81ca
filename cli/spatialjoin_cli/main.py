"""The `spatialjoin` command: operator, worker, local stack and contract tools."""

from __future__ import annotations

from importlib.metadata import version

import typer

from . import (
    bench_api_cmd,
    bench_cmd,
    bench_worker_cmd,
    crds_cmd,
    dataset_cmd,
    db_cmd,
    demo_cmd,
    diagnose_cmd,
    operator_cmd,
    restore_cmd,
    stack_cmd,
    worker_cmd,
)

app = typer.Typer(help="spatialjoin-operator: partitioned spatial joins on Kubernetes.",
                  no_args_is_help=True)
app.add_typer(stack_cmd.app, name="stack")
app.add_typer(crds_cmd.app, name="crds")
app.add_typer(db_cmd.app, name="db")
app.add_typer(dataset_cmd.app, name="dataset")
app.command("worker")(worker_cmd.worker)
app.command("operator")(operator_cmd.operator)
app.command("demo")(demo_cmd.demo)
app.command("diagnose")(diagnose_cmd.diagnose)
app.command("restore")(restore_cmd.restore)

bench = typer.Typer(help="Benchmarks that print figures (not tests).", no_args_is_help=True)
bench.command("worker")(bench_worker_cmd.worker)
bench.command("api")(bench_api_cmd.api)
bench.command("scaling")(bench_cmd.scaling)
app.add_typer(bench, name="bench")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"spatialjoin {version('spatialjoin-operator')}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(False, "--version", callback=_print_version,
                                      is_eager=True, help="Print the version and exit."),
) -> None:
    """Partitioned spatial joins, off the request path."""


if __name__ == "__main__":
    app()
