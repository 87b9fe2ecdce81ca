"""`make demo`: the whole story on the local stack, from a fresh machine to a Succeeded job.

Stack up → small dataset → the chart (CRDs, RBAC, ServiceAccount; no operator
pod, there is no kubelet) → the operator as a local process authenticated with
the chart's ServiceAccount token → the example WorkerPool (its Deployment's
pods run under the local runner) → a 12-partition SpatialJoinJob, followed to
Succeeded → what was written, and where to look next. The stack stays up.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from kubernetes import client, config

from spatialjoin_contracts import api
from spatialjoin_contracts.dataset_load import load_dataset
from spatialjoin_contracts.ddl import migrate
from spatialjoin_contracts.partition_map import grid_partition_map

from . import stack
from .paths import repo_root
from .procs import free_port
from .waiting import wait_for

NAMESPACE = "spatialjoin-demo"
OPERATOR_NAMESPACE = "spatialjoin-system"
RELEASE = "spatialjoin"
Report = Callable[[str], None]


def tools(settings: dict[str, Any]) -> tuple[str, str]:
    bin_dir = Path(settings["kubernetes"]["bin"])
    return str(bin_dir / "kubectl"), str(bin_dir / "helm")


def run_tool(argv: list[str], kubeconfig: str) -> str:
    result = subprocess.run(argv, env={**os.environ, "KUBECONFIG": kubeconfig},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def load_data(url: str, report: Report) -> None:
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            migrate(cur)
        loaded = load_dataset(conn, grid_partition_map(), scale="small", seed=42,
                              invalid_fraction=0.002)
    report(f"dataset: {loaded.polygons:,} polygons, {loaded.points:,} points loaded "
           f"in {time.monotonic() - started:.1f}s")


def install_chart(kubeconfig: str, helm: str, report: Report) -> None:
    """CRDs, RBAC and the ServiceAccount from the chart; zero operator replicas."""
    chart = repo_root() / "charts" / "spatialjoin-operator"
    run_tool([helm, "upgrade", "--install", RELEASE, str(chart), "--namespace",
              OPERATOR_NAMESPACE, "--create-namespace", "--set", "replicaCount=0",
              "--set", f"watch.namespaces={{{NAMESPACE}}}", "--wait=false"], kubeconfig)
    report(f"chart installed: release {RELEASE} in {OPERATOR_NAMESPACE} (CRDs, RBAC, "
           "ServiceAccount; the operator runs locally below)")


def service_account_kubeconfig(api_client: client.ApiClient, admin: dict[str, Any],
                               state_dir: Path) -> str:
    """A kubeconfig that authenticates as the chart's ServiceAccount, not as admin."""
    core = client.CoreV1Api(api_client)

    def token() -> str | None:
        for account in core.list_namespaced_service_account(OPERATOR_NAMESPACE).items:
            name = account.metadata.name if account.metadata else None
            if not name or not name.startswith(RELEASE):
                continue
            for ref in account.secrets or []:
                if not ref.name:
                    continue
                secret = core.read_namespaced_secret(ref.name, OPERATOR_NAMESPACE)
                if secret.data and "token" in secret.data:
                    return base64.b64decode(secret.data["token"]).decode()
        return None

    sa_token = wait_for(token, timeout=60, what="the ServiceAccount's token Secret")
    cluster = admin["clusters"][0]
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": sa_token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"],
                                                       "user": "operator"}}],
    }
    path = state_dir / "demo-operator.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return str(path)


def apply_secrets(core: client.CoreV1Api, settings: dict[str, Any]) -> None:
    s3 = settings["s3"]
    secrets = {"spatialjoin-db": {"url": settings["postgis"]["url"]},
               "spatialjoin-s3": {"AWS_ACCESS_KEY_ID": s3["access_key"],
                                  "AWS_SECRET_ACCESS_KEY": s3["secret_key"]}}
    for name, data in secrets.items():
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
        try:
            core.create_namespaced_secret(NAMESPACE, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_secret(name, NAMESPACE, body)


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root() / "examples" / name).read_text())
    return loaded


def demo_pool(settings: dict[str, Any]) -> dict[str, Any]:
    pool = example("workerpool.yaml")
    pool["metadata"] = {"name": "demo-pool", "namespace": NAMESPACE}
    spec = pool["spec"]
    spec["broker"]["bootstrapServers"] = settings["kafka"]["bootstrap"]
    spec["storage"]["endpoint"] = settings["s3"]["endpoint"]
    spec["replicas"] = {"min": 2, "max": 4}
    return pool


def demo_job(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    job = example("spatialjoinjob.yaml")
    job["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = job["spec"]
    spec["workerPoolRef"] = {"name": "demo-pool"}
    spec.pop("traceId", None)  # the object's uid: a fresh trace per demo run
    spec.pop("partitions", None)
    spec.pop("bbox", None)
    spec["output"]["uriPrefix"] = f"s3://{settings['s3']['bucket']}/demo"
    spec["sla"] = {"deadlineSeconds": 90}
    return job


def apply_object(custom: client.CustomObjectsApi, plural: str, body: dict[str, Any]) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural, body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        current: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
            api.GROUP, api.VERSION, namespace, plural, name)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        custom.replace_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural,
                                                name, body)


class OperatorProcess:
    """`spatialjoin operator` for the demo namespace, stopped by pid at the end."""

    def __init__(self, kubeconfig: str, log: Path) -> None:
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": kubeconfig,
               "SPATIALJOIN_OPERATOR_METRICS_PORT": str(self.metrics_port),
               "SPATIALJOIN_OPERATOR_METRICS_ADDR": "127.0.0.1"}
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "spatialjoin"), "operator", "--namespace",
                 NAMESPACE, "--standalone"], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def job_status(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    job: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
        api.GROUP, api.VERSION, NAMESPACE, api.JOB_PLURAL, name)
    status: dict[str, Any] = job.get("status") or {}
    return status


def prepare(report: Report) -> tuple[dict[str, Any], client.ApiClient, str]:
    """Stack, data, chart, namespace, secrets, pool: everything but the job."""
    started = time.monotonic()
    ctx = stack.up(report=report)
    settings = ctx.settings
    kubeconfig = settings["kubernetes"]["kubeconfig"]
    _, helm = tools(settings)
    load_data(settings["postgis"]["url"], report)
    api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api_client)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    install_chart(kubeconfig, helm, report)
    apply_secrets(core, settings)
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    operator_kubeconfig = service_account_kubeconfig(api_client, admin, ctx.state_dir)
    apply_object(client.CustomObjectsApi(api_client), api.POOL_PLURAL, demo_pool(settings))
    report(f"namespace {NAMESPACE}: Secrets and WorkerPool demo-pool applied "
           f"({time.monotonic() - started:.1f}s so far)")
    return settings, api_client, operator_kubeconfig
