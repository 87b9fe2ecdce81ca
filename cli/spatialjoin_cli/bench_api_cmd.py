"""`spatialjoin bench api`: load-test the submission API on loopback, bounded and self-stopping.

By default it starts the API alone (``python -m spatialjoin_operator.submission_api``)
on 127.0.0.1 against the current kubeconfig, in a temporary namespace it
deletes afterwards, with a generated token. ``--url`` targets a running API
instead (then ``--token`` and ``--namespace`` say how to reach and check it).

Phase 1 POSTs ``requests / duplicates`` distinct trace ids, each ``duplicates``
times, interleaved so that duplicates race; phase 2 GETs their status. Both
stop at ``--requests`` or ``--duration``, whichever comes first. Reported:
requests per second, p50/p99 latency, status codes, and the idempotency
check: one SpatialJoinJob per trace id, one ``created: true`` per trace id,
one uid per trace id across every response.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

MAX_REQUESTS = 5000
MAX_DURATION_S = 120.0


@dataclass
class Sample:
    phase: str
    trace_id: str
    status: int
    seconds: float
    uid: str | None = None
    created: bool | None = None


@dataclass
class Phase:
    name: str
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        latencies = sorted(s.seconds for s in self.samples)
        return {
            "requests": len(self.samples),
            "seconds": round(self.seconds, 3),
            "rps": round(len(self.samples) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(_quantile(latencies, 0.50) * 1000, 1),
            "p99_ms": round(_quantile(latencies, 0.99) * 1000, 1),
            "max_ms": round((latencies[-1] if latencies else 0.0) * 1000, 1),
            "codes": dict(sorted(Counter(str(s.status) for s in self.samples).items())),
        }


def _quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``values``."""
    if not values:
        return 0.0
    rank = max(1, min(len(values), math.ceil(q * len(values))))
    return values[rank - 1]


def api(
    clients: int = typer.Option(8, "--clients", "-c", min=1, max=64,
                                help="Concurrent clients."),
    requests: int = typer.Option(400, "--requests", "-n", min=1, max=MAX_REQUESTS,
                                 help="POSTs (and as many GETs) at most."),
    duration: float = typer.Option(30.0, "--duration", min=1.0, max=MAX_DURATION_S,
                                   help="Seconds per phase at most."),
    duplicates: int = typer.Option(4, "--duplicates", min=1, max=16,
                                   help="POSTs per trace id (racing)."),
    url: str | None = typer.Option(None, "--url", help="A running API; default: start one."),
    token: str | None = typer.Option(None, "--token", envvar="SPATIALJOIN_API_TOKEN",
                                     help="Bearer token for --url."),
    namespace: str | None = typer.Option(None, "--namespace",
                                         help="With --url: where the API creates jobs."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG"),
    out: Path = typer.Option(Path("bench-results"), "--out",  # noqa: B008
                             help="Folder for api.json."),
) -> None:
    """Requests per second and p99 latency with N concurrent clients; no job created twice."""
    from spatialjoin_operator.diagnose.kube import api_client

    kube = api_client(kubeconfig)
    try:
        if url is None:
            with _local_api(kube) as (base, bearer, ns):
                figures = _run(base, bearer, ns, kube, clients, requests, duration, duplicates)
        else:
            if not token or not namespace:
                typer.echo("--url needs --token and --namespace", err=True)
                raise typer.Exit(2)
            figures = _run(url.rstrip("/"), token, namespace, kube, clients, requests, duration,
                           duplicates)
    finally:
        kube.close()  # type: ignore[no-untyped-call]
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps(figures, indent=2) + "\n")
    console.print(_table(figures))
    ok = figures["idempotency"]["ok"]
    console.print(f"idempotency: {'OK' if ok else 'VIOLATED'}: {figures['idempotency']['detail']}")
    console.print(f"figures written to {out / 'api.json'}")
    if not ok:
        raise typer.Exit(1)


@contextmanager
def _local_api(kube: Any) -> Iterator[tuple[str, str, str]]:
    """The API alone in a subprocess on loopback, a temporary namespace and token."""
    from kubernetes import client

    from spatialjoin_devstack.procs import free_port
    from spatialjoin_devstack.waiting import wait_for

    _require_crd(kube)
    core = client.CoreV1Api(kube)
    ns = f"bench-api-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    bearer = secrets.token_urlsafe(32)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sj-bench-api-") as tmp:
        token_file = Path(tmp) / "token"
        token_file.write_text(bearer + "\n")
        env = {**os.environ, "SPATIALJOIN_API_ADDR": "127.0.0.1",
               "SPATIALJOIN_API_PORT": str(port), "SPATIALJOIN_API_NAMESPACE": ns,
               "SPATIALJOIN_API_TOKEN_FILE": str(token_file), "SPATIALJOIN_API_MAX_WAIT_S": "2"}
        log = (Path(tmp) / "api.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "spatialjoin_operator.submission_api"],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: proc.poll() is None and _healthy(base), timeout=30,
                     what="submission API healthy")
            yield base, bearer, ns
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()
            core.delete_namespace(ns, propagation_policy="Background")


def _healthy(base: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
        return bool(response.status == 200)


def _require_crd(kube: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from spatialjoin_contracts import api as names

    try:
        client.ApiextensionsV1Api(kube).read_custom_resource_definition(
            f"{names.JOB_PLURAL}.{names.GROUP}")
    except ApiException as exc:
        if exc.status == 404:
            typer.echo("the SpatialJoinJob CRD is not installed: kubectl apply -f crds/",
                       err=True)
            raise typer.Exit(2) from exc
        raise


def _run(base: str, bearer: str, ns: str, kube: Any, clients: int, requests: int,
         duration: float, duplicates: int) -> dict[str, Any]:
    distinct = max(1, requests // duplicates)
    run_id = uuid.uuid4().hex[:6]
    traces = [f"bench-{run_id}-{i:05d}" for i in range(distinct)]
    # Interleave so that the duplicates of a trace id are in flight together.
    order = [trace for trace in traces for _ in range(duplicates)][:requests]
    posts, gets = asyncio.run(_load(base, bearer, order, traces, clients, duration))
    idempotency = _check(kube, ns, posts)
    return {"clients": clients, "duplicates_per_trace": duplicates,
            "distinct_trace_ids": len({s.trace_id for s in posts.samples}),
            "post": posts.figures(), "get": gets.figures(), "idempotency": idempotency}


async def _load(base: str, bearer: str, order: list[str], traces: list[str], clients: int,
                duration: float) -> tuple[Phase, Phase]:
    import aiohttp

    from spatialjoin_contracts import samples

    body = json.dumps(samples.job_spec()).encode()
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def post(trace: str) -> Sample:
            started = time.perf_counter()
            async with session.post(f"{base}/v1/joins", data=body,
                                    headers={**headers, "X-Request-Trace-ID": trace}) as resp:
                payload = await resp.json(content_type=None)
            return Sample("post", trace, resp.status, time.perf_counter() - started,
                          (payload.get("job") or {}).get("uid"), payload.get("created"))

        async def get(trace: str) -> Sample:
            started = time.perf_counter()
            async with session.get(f"{base}/v1/joins/{trace}", headers=headers) as resp:
                await resp.read()
            return Sample("get", trace, resp.status, time.perf_counter() - started)

        posts = await _phase("post", order, post, clients, duration)
        gets = await _phase("get", [t for t in traces for _ in range(len(order) // len(traces))]
                            or traces, get, clients, duration)
    return posts, gets


async def _phase(name: str, work: list[str], call: Any, clients: int,
                 duration: float) -> Phase:
    phase = Phase(name)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    started = time.perf_counter()
    stop_at = started + duration

    async def client() -> None:
        while time.perf_counter() < stop_at:
            try:
                trace = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            phase.samples.append(await call(trace))

    await asyncio.gather(*(client() for _ in range(clients)))
    phase.seconds = time.perf_counter() - started
    return phase


def _check(kube: Any, ns: str, posts: Phase) -> dict[str, Any]:
    """One job per trace id; one created=true per trace id; one uid per trace id."""
    from kubernetes import client

    from spatialjoin_contracts import api as names
    from spatialjoin_operator import submission

    listing = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, names.JOB_PLURAL,
        label_selector=f"{submission.SUBMITTED_LABEL}={submission.SUBMITTED_VALUE}")
    items: list[dict[str, Any]] = listing["items"]  # type: ignore[index]
    jobs = Counter(submission.trace_of(item) for item in items)
    posted = {s.trace_id for s in posts.samples}
    uids: dict[str, set[str]] = {}
    created: Counter[str] = Counter()
    for sample in posts.samples:
        if sample.status == 202 and sample.uid:
            uids.setdefault(sample.trace_id, set()).add(sample.uid)
            created[sample.trace_id] += bool(sample.created)
    problems = []
    twice = [t for t in posted if jobs.get(t, 0) != 1]
    if twice:
        problems.append(f"{len(twice)} trace ids without exactly one job, e.g. {twice[0]}")
    several = [t for t, found in uids.items() if len(found) != 1]
    if several:
        problems.append(f"{len(several)} trace ids answered with several uids")
    created_twice = [t for t in posted if created.get(t, 0) != 1]
    if created_twice:
        problems.append(f"{len(created_twice)} trace ids not created exactly once")
    failed = sum(1 for s in posts.samples if s.status != 202)
    if failed:
        problems.append(f"{failed} POSTs not answered 202")
    return {"ok": not problems, "jobs": sum(jobs[t] for t in posted), "trace_ids": len(posted),
            "detail": "; ".join(problems) or f"{len(posted)} trace ids, {len(posted)} jobs, "
                                                f"each created once and answered with one uid"}


def _table(figures: dict[str, Any]) -> Table:
    table = Table("phase", "requests", "rps", "p50 ms", "p99 ms", "max ms", "codes",
                  title=f"submission API, {figures['clients']} clients, "
                        f"{figures['duplicates_per_trace']} POSTs per trace id")
    for phase in ("post", "get"):
        f = figures[phase]
        table.add_row(phase.upper(), str(f["requests"]), f"{f['rps']:.1f}", f"{f['p50_ms']:.1f}",
                      f"{f['p99_ms']:.1f}", f"{f['max_ms']:.1f}",
                      ", ".join(f"{k}: {v}" for k, v in f["codes"].items()))
    return table
