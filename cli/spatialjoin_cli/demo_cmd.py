"""`spatialjoin demo` (what `make demo` runs): a real SpatialJoinJob end to end, narrated."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def demo(timeout: float = typer.Option(600, "--timeout", help="Seconds to wait for the job.")
         ) -> None:
    """Bring up the stack, run the operator and a 12-partition job, show the results."""
    from kubernetes import client

    from spatialjoin_contracts import api
    from spatialjoin_devstack import demo as story
    from spatialjoin_devstack import stack

    started = time.monotonic()
    settings, api_client, operator_kubeconfig = story.prepare(console.print)
    custom = client.CustomObjectsApi(api_client)
    log = stack.context().state_dir / "demo-operator.log"
    operator = story.OperatorProcess(operator_kubeconfig, log)
    console.print(f"operator running (pid {operator.proc.pid}, log {log}), "
                  f"as ServiceAccount {story.RELEASE}… in {story.OPERATOR_NAMESPACE}")
    try:
        name = f"demo-join-{datetime.now(UTC):%H%M%S}"
        story.apply_object(custom, api.JOB_PLURAL, story.demo_job(name, settings))
        console.print(f"SpatialJoinJob {name} applied; following it:")
        status = _follow(custom, name, timeout)
    finally:
        operator.stop()
    kubectl, _ = story.tools(settings)
    kubeconfig = settings["kubernetes"]["kubeconfig"]
    console.print(story.run_tool([kubectl, "get", "workerpools,spatialjoinjobs", "-n",
                                  story.NAMESPACE, "-o", "wide"], kubeconfig))
    _print_results(status, settings)
    _print_next(name, operator.metrics_port, time.monotonic() - started)
    if status.get("phase") != "Succeeded":
        console.print(f"[red]job ended {status.get('phase')}: see {log}[/red]")
        raise typer.Exit(1)


def _follow(custom: Any, name: str, timeout: float) -> dict[str, Any]:
    from spatialjoin_devstack import demo as story

    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total} partitions"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("Pending", total=12)
        while time.monotonic() < deadline:
            status = story.job_status(custom, name)
            progress.update(bar, completed=status.get("partitionsDone") or 0,
                            total=status.get("partitionsTotal") or 12,
                            description=f"{status.get('phase') or 'Pending':<10}")
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            progress.refresh()
            time.sleep(0.5)  # a progress display's refresh, not synchronization
    return status


def _print_results(status: dict[str, Any], settings: dict[str, Any]) -> None:
    import pyarrow.parquet as pq
    import shapely
    from pyarrow import fs

    table = Table("partition", "rows", "bytes", "sha256", "uri", title="result objects")
    for result in status.get("results") or []:
        table.add_row(result["partition"], f"{result['rows']:,}", f"{result.get('bytes', 0):,}",
                      result["sha256"][:16] + "…", result["uri"])
    console.print(table)
    console.print(f"total: {status.get('rows', 0):,} rows, {status.get('bytes', 0):,} bytes, "
                  f"contract {status.get('activeContract')}")
    results = status.get("results") or []
    if not results:
        return
    s3 = settings["s3"]
    filesystem = fs.S3FileSystem(access_key=s3["access_key"], secret_key=s3["secret_key"],
                                 endpoint_override=s3["endpoint"], scheme="http",
                                 region="us-east-1")
    first = results[0]["uri"].removeprefix("s3://")
    head = pq.ParquetFile(filesystem.open_input_file(first)).read_row_group(0).slice(0, 5)
    sample = Table("partition_key", "domain_id", "feature_id", "geometry (WKT)",
                   title=f"first rows of {results[0]['uri']}")
    for row in head.to_pylist():
        sample.add_row(row["partition_key"], str(row["domain_id"]), str(row["feature_id"]),
                       shapely.from_wkb(row["geometry"]).wkt)
    console.print(sample)


def _print_next(name: str, metrics_port: int, seconds: float) -> None:
    from spatialjoin_devstack import demo as story

    ns = story.NAMESPACE
    console.print(f"""[bold]demo finished in {seconds:.0f}s.[/bold] Where to look next:
  eval "$(.venv/bin/spatialjoin stack env)"; export PATH="$SPATIALJOIN_TOOLS_BIN:$PATH"
  kubectl get spatialjoinjob {name} -n {ns} -o yaml     # status, conditions, results
  kubectl get events -n {ns} --sort-by=.lastTimestamp      # every transition
  kubectl get workerpool demo-pool -n {ns} -o yaml        # lag, latency, severity
  kubectl get deploy,pods -n {ns}                         # workers (run by the local runner)
  operator metrics were on http://127.0.0.1:{metrics_port}/metrics (worker metrics: the
  pods' spatialjoin.io/local-ports annotation)
  make stack-down                                          # stop everything""")
