"""Kubernetes API: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

The binaries are built once from Debian's kubernetes source package by
``scripts/install-k8s.sh`` and cached; there is no kubelet or scheduler, so
pods stay unscheduled and the local runner plays the kubelet's part.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import yaml

from ..paths import repo_root
from ..procs import free_port, start_process, stop_process
from ..waiting import wait_for
from .base import Settings, StackContext

K8S_VERSION = "1.20.2"
ETCD = "/usr/bin/etcd"


def k8s_bin_dir(ctx: StackContext) -> Path:
    return ctx.cache_dir / f"k8s-{K8S_VERSION}"


def tools_bin_dir(ctx: StackContext) -> Path:
    """kubectl and helm, extracted from their wheel by scripts/install-kube-tools.sh."""
    return ctx.cache_dir / "bin"


class KubernetesComponent:
    """A single-node control plane with token auth and RBAC, but no nodes."""

    name = "kubernetes"

    def install(self, ctx: StackContext) -> None:
        scripts = repo_root() / "scripts"
        env_cache = {"SPATIALJOIN_CACHE": str(ctx.cache_dir)}
        if not Path(ETCD).exists():
            subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True)
        subprocess.run(["bash", str(scripts / "install-k8s.sh")], check=True,
                       env={**_base_env(), **env_cache})
        subprocess.run(["bash", str(scripts / "install-kube-tools.sh")], check=True,
                       env={**_base_env(), **env_cache})

    def start(self, ctx: StackContext) -> Settings:
        data = ctx.data_dir(self.name)
        shutil.rmtree(data)
        data.mkdir(parents=True)
        pki = data / "pki"
        _make_pki(pki)
        token = secrets.token_hex(24)
        (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        ports = {k: free_port() for k in ("etcd_client", "etcd_peer", "apiserver")}

        etcd_url = f"http://127.0.0.1:{ports['etcd_client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        start_process("etcd", [
            ETCD, "--name", "spatialjoin", "--data-dir", str(data / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"spatialjoin={peer_url}", "--log-level", "warn",
        ], ctx.run_dir)
        wait_for(lambda: _http_ok(f"{etcd_url}/health"), timeout=30, what="etcd health")

        bins = k8s_bin_dir(ctx)
        server = f"https://127.0.0.1:{ports['apiserver']}"
        start_process("kube-apiserver", [
            str(bins / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}", "--insecure-port=0",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/24", "--allow-privileged=true",
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=0",
        ], ctx.run_dir)
        ca = pki / "ca.crt"
        wait_for(lambda: _http_ok(f"{server}/readyz", token=token, ca=ca), timeout=90,
                 interval=0.5, what="kube-apiserver /readyz")

        kubeconfig = data / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(_kubeconfig(server, ca, token)))
        kubeconfig.chmod(0o600)
        start_process("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", "--port=0", "--secure-port=0", "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={ca}",
            "--use-service-account-credentials=false", "--v=0",
        ], ctx.run_dir)
        settings: Settings = {"server": server, "token": token, "ca": str(ca),
                              "kubeconfig": str(kubeconfig), "ports": ports,
                              "bin": str(tools_bin_dir(ctx))}
        wait_for(lambda: self._service_account_ready(settings), timeout=60, interval=0.5,
                 what="controller-manager to create the default service account token")
        return settings

    def _service_account_ready(self, settings: Settings) -> bool:
        """The token controller has run: a sign that the controller-manager works."""
        url = f"{settings['server']}/api/v1/namespaces/default/serviceaccounts/default"
        body = _http_get(url, token=settings["token"], ca=Path(settings["ca"]))
        return b'"secrets"' in body

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        return _http_ok(f"{settings['server']}/readyz", token=settings["token"],
                        ca=Path(settings["ca"]))

    def env(self, settings: Settings) -> dict[str, str]:
        return {"KUBECONFIG": settings["kubeconfig"], "SPATIALJOIN_TOOLS_BIN": settings["bin"]}

    def stop(self, ctx: StackContext) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            stop_process(ctx.run_dir, name, timeout=20)


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _kubeconfig(server: str, ca: Path, token: str) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "spatialjoin",
        "clusters": [{"name": "local", "cluster": {"server": server,
                                                   "certificate-authority": str(ca)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "spatialjoin", "context": {"cluster": "local", "user": "admin"}}],
    }


def _make_pki(pki: Path) -> None:
    """A CA, an apiserver serving cert for 127.0.0.1/localhost, and a service-account key."""
    pki.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=pki, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "30", "-subj", "/CN=spatialjoin-local-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out",
            "apiserver.csr", "-subj", "/CN=kube-apiserver")
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "apiserver.crt", "-days", "30", "-extfile", "san.ext")
    openssl("genrsa", "-out", "sa.key", "2048")
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")


def _http_get(url: str, *, token: str | None = None, ca: Path | None = None) -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(request, timeout=3, context=context) as response:
        body: bytes = response.read()
        return body


def _http_ok(url: str, *, token: str | None = None, ca: Path | None = None) -> bool:
    _http_get(url, token=token, ca=ca)
    return True
