"""`spatialjoin restore --from s3://…`: rebuild the result tables from the result objects."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

if TYPE_CHECKING:
    from spatialjoin_operator.restore_plan import RestoreReport

console = Console(stderr=True)

Source = Annotated[str, typer.Option(
    "--from", help="s3://bucket/prefix holding TRACE/PARTITION.parquet objects (a job's "
                   "output.uriPrefix, or deeper).")]
DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", envvar="SPATIALJOIN_DATABASE_URL", show_envvar=True,
    help="libpq URL of the pool's database.")]


def restore(
    source: Source,
    database_url: DatabaseUrl = None,
    s3_endpoint: str | None = typer.Option(
        None, "--s3-endpoint", envvar="SPATIALJOIN_S3_ENDPOINT",
        help="http(s)://host:port of an S3-compatible store; default AWS."),
    s3_region: str = typer.Option("us-east-1", "--s3-region", envvar="AWS_REGION"),
    access_key: str | None = typer.Option(None, envvar="AWS_ACCESS_KEY_ID", hidden=True),
    secret_key: str | None = typer.Option(None, envvar="AWS_SECRET_ACCESS_KEY", hidden=True),
    pool: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
        [], "--pool", help="NAMESPACE/NAME of a WorkerPool to pause meanwhile (repeatable)."),
    all_pools: bool = typer.Option(False, "--all-pools", help="Pause every WorkerPool."),
    trace_id: list[str] = typer.Option(  # noqa: B008
        [], "--trace-id", help="Restore only this traceId (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and report; write nothing."),
    requeue_lost: bool = typer.Option(
        False, "--requeue-lost",
        help="Partitions done whose result is nowhere go back to queued, for the job to "
             "publish again."),
    keep_paused: bool = typer.Option(False, "--keep-paused",
                                     help="Leave the pools paused afterwards."),
    no_kubernetes: bool = typer.Option(
        False, "--no-kubernetes",
        help="No pausing and no checksums from the jobs' status (storage and database only)."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Rebuild spatial_join_results and the done state of spatial_async_jobs from the
    objects' footers, verifying each checksum; idempotent (run it again: all skipped).

    Exit status: 0 consistent, 1 inconsistent or lost partitions, 2 the restore failed.
    """
    from spatialjoin_operator import restore as recovery
    from spatialjoin_operator.diagnose.kube import api_client

    if not database_url:
        typer.echo("set SPATIALJOIN_DATABASE_URL or pass --database-url", err=True)
        raise typer.Exit(2)
    if not source.startswith("s3://"):
        typer.echo(f"--from must be an s3:// URI, not {source!r}", err=True)
        raise typer.Exit(2)
    pools = [_pool_ref(p) for p in pool]
    kube = None
    if not no_kubernetes:
        try:
            kube = api_client(kubeconfig)
        except Exception as exc:
            if pools or all_pools:
                typer.echo(f"cannot pause pools without Kubernetes access: {exc}", err=True)
                raise typer.Exit(2) from exc
            console.print(f"no Kubernetes access ({exc}): no checksums from the jobs' status")
    filesystem = recovery.s3_filesystem(endpoint=s3_endpoint, access_key=access_key,
                                        secret_key=secret_key, region=s3_region)
    restore_id = f"restore-{uuid.uuid4().hex[:8]}"
    try:
        references, uids = _job_records(kube)
        if kube is not None and all_pools:
            pools = recovery.all_pools(kube)
        with recovery.pools_paused(None if dry_run else kube, pools, restore_id,
                                   keep_paused=keep_paused) as paused, \
                Progress(console=console, transient=True) as bar:
            if paused:
                console.print(f"paused ({recovery.PAUSE_ANNOTATION}={restore_id}): "
                              f"{', '.join(paused)}")
            task = bar.add_task("restoring", total=None)
            report = recovery.restore(
                source, database_url=database_url, filesystem=filesystem,
                references=references, job_uids=uids, trace_ids=trace_id, dry_run=dry_run,
                requeue_lost=requeue_lost,
                progress=lambda done, total: bar.update(task, completed=done, total=total))
            report.paused_pools = paused
    except Exception as exc:
        typer.echo(f"restore failed: {type(exc).__name__}: {exc}", err=True)
        if pools and not dry_run and kube is not None:
            typer.echo(f"pools stay paused; resume with: kubectl annotate workerpool -n NS NAME "
                       f"{recovery.PAUSE_ANNOTATION}-", err=True)
        raise typer.Exit(2) from exc
    finally:
        if kube is not None:
            kube.close()  # type: ignore[no-untyped-call]
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print(report, keep_paused)
    raise typer.Exit(0 if report.consistent else 1)


def _job_records(kube: Any) -> tuple[dict[tuple[str, str], list[tuple[str, str]]],
                                     dict[str, str]]:
    """Checksums recorded in the jobs' status, and their uids; none when they cannot be read."""
    from spatialjoin_operator import restore as recovery

    if kube is None:
        return {}, {}
    try:
        return recovery.job_records(kube)
    except Exception as exc:  # forbidden, or the CRD is not installed
        console.print(f"SpatialJoinJobs not readable ({exc}): no checksums from their status")
        return {}, {}


def _pool_ref(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise typer.BadParameter(f"--pool wants NAMESPACE/NAME, not {text!r}")
    return namespace, name


def _print(report: RestoreReport, keep_paused: bool) -> None:
    from spatialjoin_operator.restore_plan import Action

    out = Console()
    if report.tables_recreated:
        out.print(f"recreated tables: {', '.join(report.tables_recreated)}")
    table = Table("action", "traceId", "partition", "rows", "reason",
                  title=f"restore from {report.source}" + (" (dry run)" if report.dry_run
                                                            else ""))
    for decision in report.decisions:
        if decision.action is Action.IGNORE:
            continue
        table.add_row(decision.action.value, decision.trace_id or "-",
                      decision.partition or "-", "-" if decision.rows is None
                      else str(decision.rows), decision.reason)
    out.print(table)
    for lost in report.lost:
        state = "re-queued" if lost in report.requeued else "not re-queued (--requeue-lost)"
        out.print(f"lost: {lost.trace_id}/{lost.partition} is done but its result is nowhere; "
                  f"{state}")
    summary = ", ".join(f"{count} {name}" for name, count in report.summary().items() if count)
    out.print(f"summary: {summary or 'nothing under the prefix'}")
    if report.paused_pools:
        out.print(f"pools {'left paused' if keep_paused else 'resumed'}: "
                  f"{', '.join(report.paused_pools)}")
