"""What the operator's ServiceAccount may do, and nothing more: the contract of templates/rbac.yaml.

Each entry is derived from a call in the operator (see the chart README's RBAC
table). The unit tests compare the rendered rules with these sets exactly; the
integration tests ask the apiserver (``kubectl auth can-i --as=…``) for every
allowed verb and for a list of verbs that must stay denied.
"""

from __future__ import annotations

from typing import Final

Rules = dict[tuple[str, str], frozenset[str]]
"""(apiGroup, resource[/subresource]) -> verbs."""


OPERATOR: Final[Rules] = {
    ("spatialjoin.io", "workerpools"): frozenset({"get", "list", "watch", "patch"}),
    ("spatialjoin.io", "spatialjoinjobs"): frozenset({"get", "list", "watch", "patch",
                                                      "delete"}),
    ("spatialjoin.io", "spatialjoinjobs/status"): frozenset({"patch"}),
    ("spatialjoin.io", "workerpools/status"): frozenset({"patch"}),
    ("", "events"): frozenset({"create"}),
    ("", "secrets"): frozenset({"get"}),
    ("", "pods"): frozenset({"list"}),
    ("apps", "deployments"): frozenset({"get", "create", "patch"}),
    ("", "configmaps"): frozenset({"get", "create", "patch"}),
    ("", "services"): frozenset({"get", "create", "patch"}),
    ("policy", "poddisruptionbudgets"): frozenset({"get", "create", "patch"}),
}
"""In each watched namespace (a Role), or everywhere (a ClusterRole) when watching all."""

API: Final[Rules] = {
    ("spatialjoin.io", "spatialjoinjobs"): frozenset({"get", "list", "watch", "patch", "delete",
                                                      "create"}),
}
"""With api.enabled, the submission API also creates jobs."""

NAMESPACED_PEERING: Final[Rules] = {
    ("kopf.dev", "kopfpeerings"): frozenset({"list", "watch", "patch"}),
}
"""Added to each watched namespace's Role when peering (the default)."""

FRAMEWORK: Final[Rules] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
}
"""Cluster scope, always: kopf follows CRD changes."""

FRAMEWORK_NAMESPACED: Final[Rules] = {
    ("", "namespaces"): frozenset({"list", "watch"}),
}
"""Cluster scope, only when watching a list of namespaces (kopf checks which exist)."""

FRAMEWORK_CLUSTER_PEERING: Final[Rules] = {
    ("kopf.dev", "clusterkopfpeerings"): frozenset({"list", "watch", "patch"}),
}
"""Cluster scope, only when peering cluster-wide."""

DENIED_IN_WATCHED_NAMESPACE: Final[tuple[tuple[str, str], ...]] = (
    ("list", "secrets"),
    ("watch", "secrets"),
    ("update", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("delete", "deployments.apps"),
    ("update", "deployments.apps"),
    ("delete", "configmaps"),
    ("delete", "services"),
    ("delete", "poddisruptionbudgets.policy"),
    ("create", "workerpools.spatialjoin.io"),
    ("update", "workerpools.spatialjoin.io"),
    ("delete", "workerpools.spatialjoin.io"),
    ("create", "spatialjoinjobs.spatialjoin.io"),
    ("update", "spatialjoinjobs.spatialjoin.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts"),
    ("delete", "events"),
)
"""Verbs the operator never uses; the ServiceAccount must not have them."""


def kubectl_resource(group: str, resource: str) -> tuple[str, str | None]:
    """``resource.group`` and the subresource, as ``kubectl auth can-i`` takes them."""
    name, _, subresource = resource.partition("/")
    return (f"{name}.{group}" if group else name), (subresource or None)


def rendered_rules(rules: list[dict[str, list[str]]]) -> Rules:
    """A Role's or ClusterRole's rules as (group, resource) -> verbs (merged)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert not rule.get("resourceNames"), rule
        assert not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                merged.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in merged.items()}
