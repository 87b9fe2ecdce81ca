"""`spatialjoin operator`: run the kopf operator (as `kopf run -m spatialjoin_operator.main`)."""

from __future__ import annotations

import typer


def operator(
    namespace: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
        [], "--namespace", "-n", help="Watch only this namespace (repeatable)."),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A",
                                        help="Watch every namespace (the default with no -n)."),
    standalone: bool = typer.Option(
        False, "--standalone",
        help="No peering: for a single replica. With several replicas leave it off so "
             "only one reconciles."),
    peering: str = typer.Option("spatialjoin", "--peering", help="kopf peering object name."),
    liveness: str | None = typer.Option(
        None, "--liveness", help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Reconcile SpatialJoinJobs and WorkerPools."""
    import asyncio

    import kopf

    import spatialjoin_operator.main  # noqa: F401  registers the handlers

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON)
    clusterwide = all_namespaces or not namespace
    asyncio.run(kopf.operator(
        clusterwide=clusterwide, namespaces=[] if clusterwide else namespace,
        standalone=standalone, peering_name=None if standalone else peering,
        liveness_endpoint=liveness))
