"""`spatialjoin diagnose --trace-id ID`: why a job is slow, stuck or failing (read-only)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

TraceId = Annotated[str, typer.Option("--trace-id", help="The job's traceId (status.traceId).")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="SPATIALJOIN_DATABASE_URL", show_envvar=True,
                 help="libpq URL; default: the job's WorkerPool database Secret."),
]


def diagnose(
    trace_id: TraceId,
    database_url: DatabaseUrl = None,
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="Namespace of the job; default: search all."),
    partition: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
        [], "--partition", "-p",
        help="Partition to EXPLAIN (repeatable); default: the stuck, failed or slowest one."),
    plans: int = typer.Option(1, "--plans", min=0, max=12,
                              help="How many partitions to EXPLAIN when none is named."),
    statement_timeout: float = typer.Option(
        30.0, "--statement-timeout", min=0.1, help="Seconds EXPLAIN ANALYZE may run."),
    no_analyze: bool = typer.Option(
        False, "--no-analyze", help="Plain EXPLAIN: the estimate, without running the query."),
    no_kubernetes: bool = typer.Option(
        False, "--no-kubernetes", help="Database only (needs --database-url; no plans)."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Correlate the trace's rows, job, Events and results; inspect the partition's plan,
    indexes, statistics, sizes and bloat; name each cause and its fix. Changes nothing.

    Exit status: 0 no actionable finding, 1 findings, 2 the diagnosis could not run.
    """
    from spatialjoin_operator.diagnose.kube import api_client
    from spatialjoin_operator.diagnose.report import to_json, to_text
    from spatialjoin_operator.diagnose.service import DiagnosisError, Options
    from spatialjoin_operator.diagnose.service import diagnose as run_diagnosis

    options = Options(partitions=tuple(partition), max_plans=plans,
                      statement_timeout_s=statement_timeout, analyze=not no_analyze)
    kube = None
    if not no_kubernetes:
        try:
            kube = api_client(kubeconfig)
        except Exception as exc:  # no kubeconfig, no service account: database only
            typer.echo(f"no Kubernetes access ({exc}); diagnosing the database only", err=True)
    try:
        report = run_diagnosis(trace_id, database_url=database_url, kube_api=kube,
                               namespace=namespace, options=options)
    except DiagnosisError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:  # a database or apiserver that cannot be reached
        typer.echo(f"diagnosis failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        if kube is not None:
            kube.close()  # type: ignore[no-untyped-call]
    if as_json:
        typer.echo(json.dumps(to_json(report), indent=2, sort_keys=False))
    else:
        typer.echo(to_text(report), nl=False)
    raise typer.Exit(1 if report.primary is not None else 0)
