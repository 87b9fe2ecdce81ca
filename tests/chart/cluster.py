"""The installed chart on the stack: a release, its ServiceAccount's token, its pod as a process.

There is no kubelet, so the operator Deployment the chart installs never runs a
pod. :class:`OperatorPod` runs what the pod would run — the container's
command, args and env read back from the installed Deployment — as a process on
this host, authenticated with the chart's ServiceAccount token (never the
admin's). The only changes are the ones a pod's network namespace makes
unnecessary: listeners move from 0.0.0.0 to 127.0.0.1 on free ports.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import yaml
from kubernetes import client

from spatialjoin_devstack.procs import free_port
from spatialjoin_devstack.waiting import wait_for

from .helm import CHART, run_helm, tools_bin

VENV_BIN: Final = Path(sys.executable).parent
FORBIDDEN: Final = re.compile(
    r"forbidden|Forbidden|\(403\)|APIForbiddenError|Not enough permissions|"
    r"cannot (?:get|list|watch|create|patch|update|delete) resource")
"""A denied API call, as the apiserver, the kubernetes client or kopf (which degrades
quietly without namespace or CRD permissions) would log it."""


@dataclass
class Release:
    """A helm release of the chart in ``namespace``."""

    name: str
    namespace: str
    kubeconfig: str

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_helm(*args, "--namespace", self.namespace,
                        env={"KUBECONFIG": self.kubeconfig}, check=check, timeout=180)

    def install(self, values: Path) -> None:
        self.helm("install", self.name, str(CHART), "--values", str(values))

    def upgrade(self, values: Path) -> None:
        self.helm("upgrade", self.name, str(CHART), "--values", str(values))

    def uninstall(self, check: bool = True) -> None:
        self.helm("uninstall", self.name, "--wait", check=check)

    @property
    def fullname(self) -> str:
        return f"{self.name}-spatialjoin-operator"


def kubectl(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools_bin() / "kubectl"), "--kubeconfig", kubeconfig, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def can_i(kubeconfig: str, account: str, verb: str, resource: str, *,
          namespace: str | None, subresource: str | None = None) -> bool:
    """``kubectl auth can-i VERB RESOURCE --as=system:serviceaccount:…`` (admin asks)."""
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    extra = ["--subresource", subresource] if subresource else []
    result = kubectl(kubeconfig, "auth", "can-i", verb, resource, *scope, *extra,
                     f"--as={account}")
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {result.stdout}{result.stderr}"
    return answer == "yes"


def service_account_kubeconfig(core: client.CoreV1Api, admin_kubeconfig: str, namespace: str,
                               account: str, out: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount, with the token Secret that
    Kubernetes 1.20's token controller made for it."""

    def token() -> str | None:
        found = cast(Any, core.read_namespaced_service_account(account, namespace))
        for ref in found.secrets or []:
            secret = cast(Any, core.read_namespaced_secret(ref.name, namespace))
            if secret.type == "kubernetes.io/service-account-token" and (secret.data or {}).get(
                    "token"):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    bearer = wait_for(token, timeout=60, interval=0.25,
                      what=f"the token Secret of ServiceAccount {namespace}/{account}")
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": bearer}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account,
                                                   "namespace": namespace}}],
        "current-context": account,
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


class OperatorPod:
    """One replica of the installed operator Deployment, run as a local process."""

    def __init__(self, deployment: dict[str, Any], pod_name: str, kubeconfig: Path,
                 workdir: Path) -> None:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        self.name = pod_name
        self.log_path = workdir / f"{pod_name}.log"
        self.metrics_port = free_port()
        self.health_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "KUBECONFIG": str(kubeconfig), "HOSTNAME": pod_name}
        for item in container.get("env", []):
            env[item["name"]] = self._env_value(item, pod_name, deployment)
        env["SPATIALJOIN_OPERATOR_METRICS_ADDR"] = "127.0.0.1"
        if env.get("SPATIALJOIN_OPERATOR_METRICS_PORT", "0") != "0":
            env["SPATIALJOIN_OPERATOR_METRICS_PORT"] = str(self.metrics_port)
        argv = [*container["command"], *container.get("args", [])]
        self.argv = [re.sub(r"^--liveness=http://0\.0\.0\.0:\d+",
                            f"--liveness=http://127.0.0.1:{self.health_port}", arg)
                     for arg in argv]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=env, cwd=workdir, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def _env_value(item: dict[str, Any], pod_name: str, deployment: dict[str, Any]) -> str:
        if "value" in item:
            return str(item["value"])
        field = item["valueFrom"]["fieldRef"]["fieldPath"]
        fields = {"metadata.name": pod_name,
                  "metadata.namespace": str(deployment["metadata"]["namespace"])}
        return fields[field]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def forbidden_lines(self) -> list[str]:
        return [line[:500] for line in self.log().splitlines() if FORBIDDEN.search(line)]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self, timeout: float = 60) -> None:
        """Until kopf serves its liveness endpoint (the pod's probe target)."""

        def healthy() -> str | None:
            if not self.alive():
                return "exited"
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz",
                                        timeout=2) as response:
                return "up" if response.status == 200 else None

        try:
            state = wait_for(healthy, timeout=timeout, interval=0.2,
                             what=f"{self.name} liveness")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log()[-3000:]}") from exc
        assert state == "up", f"{self.name} exited:\n{self.log()[-3000:]}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
