"""The Kubernetes API of the local stack does real work: CRDs, kopf, controllers."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from spatialjoin_devstack.waiting import wait_for

pytestmark = pytest.mark.integration

HANDLER = Path(__file__).parent / "kopf_handlers" / "smoke_handler.py"


def _crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"smokes.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "smokes", "singular": "smoke", "kind": "Smoke"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


def test_kopf_handler_patches_status_of_a_custom_resource(
    kube_api: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.smoke.spatialjoin.io"
    extensions = client.ApiextensionsV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    extensions.create_custom_resource_definition(_crd(group))
    try:
        wait_for(lambda: _established(extensions, f"smokes.{group}"), timeout=30,
                 what="CRD established")
        monkeypatch.setenv("SMOKE_GROUP", group)
        args = ["run", "--standalone", f"--namespace={namespace}", str(HANDLER)]
        with KopfRunner(args, timeout=60) as runner:
            custom.create_namespaced_custom_object(group, "v1", namespace, "smokes", {
                "apiVersion": f"{group}/v1", "kind": "Smoke",
                "metadata": {"name": "first"}, "spec": {"name": "world"}})
            seen = wait_for(
                lambda: custom.get_namespaced_custom_object(
                    group, "v1", namespace, "smokes", "first").get("status", {}).get("seen"),
                timeout=30, what="kopf to patch status")
        assert seen == "hello world"
        assert runner.exit_code == 0, runner.output
        assert runner.exception is None
    finally:
        extensions.delete_custom_resource_definition(f"smokes.{group}")


def test_controller_manager_turns_a_deployment_into_pods(kube_api: Any, namespace: str) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "smoke"}
    apps.create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="smoke"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="c", image="example.invalid/none:0", command=[sys.executable])])))))
    pods = wait_for(lambda: len(core.list_namespaced_pod(namespace, label_selector="app=smoke")
                                .items) == 2 or None,
                    timeout=30, what="ReplicaSet controller to create 2 pods")
    assert pods is True


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    crd = extensions.read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True"
               for c in (crd.status.conditions or []))


def test_kubeconfig_is_the_stacks(stack_env: dict[str, str]) -> None:
    assert os.environ["KUBECONFIG"] == stack_env["KUBECONFIG"]
    assert Path(stack_env["KUBECONFIG"]).exists()
