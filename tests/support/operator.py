"""Shared by the end-to-end tests: apply CRDs, run the operator as a ``kopf run`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api
from spatialjoin_devstack.procs import free_port
from spatialjoin_devstack.waiting import wait_for


def apply_crds(kube_api: Any, crds: Iterable[dict[str, Any]], *,
               wait_established: bool = False) -> None:
    """Create or replace each CRD, optionally wait until Established, then until served."""
    extensions = client.ApiextensionsV1Api(kube_api)
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            current = cast(Any, extensions.read_custom_resource_definition(name))
        except ApiException as exc:
            if exc.status != 404:
                raise
            extensions.create_custom_resource_definition(cast(Any, crd))
        else:
            body = {**crd, "metadata": {**crd["metadata"],
                                        "resourceVersion": current.metadata.resource_version}}
            extensions.replace_custom_resource_definition(name, cast(Any, body))
    if wait_established:
        for name in names:
            wait_for(lambda name=name: _established(extensions, name),  # type: ignore[misc]
                     timeout=30, what=f"{name} established")
    custom = client.CustomObjectsApi(kube_api)
    for plural in (api.JOB_PLURAL, api.POOL_PLURAL):
        wait_for(lambda plural=plural: custom.list_cluster_custom_object(  # type: ignore[misc]
            api.GROUP, api.VERSION, plural) is not None, timeout=30, what=f"{plural} served")


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    crd: Any = extensions.read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True"
               for c in (crd.status.conditions or []))


class KopfProcess:
    """``kopf run --standalone`` of one handlers module for one namespace, logging to a file."""

    def __init__(self, module: str, namespace: str, env: Mapping[str, str],
                 log_path: Path) -> None:
        self.log_path = log_path
        self.metrics_port = free_port()
        full_env = {**os.environ, **env,
                    "SPATIALJOIN_OPERATOR_METRICS_PORT": str(self.metrics_port),
                    "SPATIALJOIN_OPERATOR_METRICS_ADDR": "127.0.0.1"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace",
                 namespace, "-m", module],
                env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as response:
            return str(response.read().decode())

    def wait_started(self, what: str) -> None:
        """Until it serves metrics; fails with the log's tail when it exited instead."""
        wait_for(lambda: "metrics on" in self.log() or self.proc.poll() is not None,
                 timeout=30, interval=0.1, what=what)
        assert self.proc.poll() is None, self.log()[-3000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
