"""tests/deploy/rbac.py: RBAC rules against request logs, on synthetic manifests and logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import rbac
from tests.deploy.rbac import Request, check_log, describe, grants_for, request_verb

NS = "ovn-underlay"
SA = "agent"
USER = rbac.service_account_user(NS, SA)

MANIFESTS: list[dict[str, Any]] = list(yaml.safe_load_all("""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: agent}
rules:
  - apiGroups: [""]
    resources: [pods, namespaces]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [nodes/status]
    verbs: [patch]
  - apiGroups: [ovn-underlay.io]
    resources: [underlaynodes]
    verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent}
subjects: [{kind: ServiceAccount, name: agent, namespace: ovn-underlay}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: lease, namespace: ovn-underlay}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [create]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    resourceNames: [the-lease]
    verbs: [get, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lease, namespace: ovn-underlay}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease}
subjects: [{kind: ServiceAccount, name: agent}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: events}
rules:
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: events, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: events}
subjects: [{kind: Group, name: "system:serviceaccounts:ovn-underlay"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: everything}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: someone-else}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: everything}
subjects: [{kind: ServiceAccount, name: other, namespace: ovn-underlay}]
"""))


def entry(method: str, resource: str, *, name: str = "", namespace: str = "", group: str = "",
          subresource: str = "", verb: str = "", user: str = USER) -> dict[str, Any]:
    """A log entry as the test API server writes it (its verb, unless ``verb`` is given)."""
    return {"user": user, "method": method, "apiGroup": group, "resource": resource,
            "subresource": subresource, "namespace": namespace, "name": name,
            "verb": verb or request_verb(method, name), "code": 200,
            "path": "/unused", "groups": ["system:authenticated"]}


COVERED = [
    entry("GET", "pods", verb="watch"),
    entry("GET", "pods", namespace="default", name="web"),
    entry("GET", "pods"),
    entry("GET", "namespaces"),
    entry("GET", "namespaces", verb="watch"),
    entry("GET", "namespaces", name="default"),
    entry("PATCH", "nodes", name="n1", subresource="status"),
    entry("GET", "underlaynodes", name="n1", group="ovn-underlay.io"),
    entry("PATCH", "underlaynodes", name="n1", group="ovn-underlay.io"),
    entry("POST", "leases", namespace=NS, group="coordination.k8s.io"),
    entry("GET", "leases", namespace=NS, name="the-lease", group="coordination.k8s.io"),
    entry("PUT", "leases", namespace=NS, name="the-lease", group="coordination.k8s.io"),
    entry("POST", "events", namespace="default"),
    {"user": USER, "method": "GET", "verb": "get", "nonResourceURL": "/apis", "code": 200},
    entry("DELETE", "nodes", name="n1", user="system:serviceaccount:ovn-underlay:other"),
]


@pytest.mark.parametrize(("method", "name", "watch", "verb"), [
    ("GET", "n1", False, "get"), ("GET", "", False, "list"), ("GET", "", True, "watch"),
    ("POST", "", False, "create"), ("PUT", "n1", False, "update"),
    ("PATCH", "n1", False, "patch"), ("DELETE", "n1", False, "delete"),
    ("DELETE", "", False, "deletecollection"),
])
def test_request_verb(method: str, name: str, watch: bool, verb: str) -> None:
    assert request_verb(method, name, watch) == verb


def test_request_verb_refuses_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="OPTIONS"):
        request_verb("OPTIONS", "")


def test_a_log_entry_whose_verb_contradicts_its_method_is_refused() -> None:
    with pytest.raises(ValueError, match="not what PATCH gives"):
        rbac.request_of(entry("PATCH", "nodes", name="n1", verb="get"))


def test_a_covered_log_passes() -> None:
    assert check_log(COVERED, MANIFESTS, NS, SA) == []


def test_the_log_file_format_of_the_test_api_server(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in COVERED) + "\n")
    assert rbac.read_log(log) == COVERED


@pytest.mark.parametrize(("uncovered", "named"), [
    (entry("DELETE", "pods", namespace="default", name="web"),
     "delete pods web (core) in namespace default"),
    (entry("PATCH", "nodes", name="n1"), "patch nodes n1 (core)"),
    (entry("PATCH", "underlaynodes", name="n1", group="ovn-underlay.io",
           subresource="status"), "patch underlaynodes/status n1 (ovn-underlay.io)"),
    (entry("GET", "underlaynodes", group="ovn-underlay.io", verb="list"),
     "list underlaynodes (ovn-underlay.io)"),
    (entry("GET", "pods", group="apps", verb="list"), "list pods (apps)"),
    (entry("PUT", "leases", namespace=NS, name="another", group="coordination.k8s.io"),
     "update leases another (coordination.k8s.io) in namespace ovn-underlay"),
    (entry("POST", "leases", namespace="kube-system", group="coordination.k8s.io"),
     "create leases (coordination.k8s.io) in namespace kube-system"),
    (entry("POST", "events", namespace="kube-system"),
     "create events (core) in namespace kube-system"),
    ({"user": USER, "method": "GET", "verb": "get", "nonResourceURL": "/metrics"},
     "get /metrics"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_an_uncovered_request_is_named(uncovered: dict[str, Any], named: str) -> None:
    missing = check_log([*COVERED, uncovered, uncovered], MANIFESTS, NS, SA)
    assert [str(r) for r in missing] == [named]
    message = describe(missing, NS, SA)
    assert "ServiceAccount ovn-underlay/agent" in message
    assert f"  - {named}" in message


def test_a_rolebinding_to_a_clusterrole_grants_it_in_its_namespace_only() -> None:
    grants = grants_for(MANIFESTS, NS, SA)
    events = [g for g in grants if "events" in g.rule.resources]
    assert [g.namespace for g in events] == ["default"]


def test_bindings_of_other_subjects_grant_nothing() -> None:
    def sources(name: str) -> set[str]:
        return {g.source for g in grants_for(MANIFESTS, NS, name)}
    everything = "ClusterRoleBinding someone-else -> ClusterRole everything"
    assert everything in sources("other")
    assert everything not in sources(SA)
    assert sources("third") == {"default roles of system:authenticated",
                                "RoleBinding events -> ClusterRole events"}


def test_wildcards_and_subresource_wildcards() -> None:
    rule = rbac.Rule(verbs=("*",), api_groups=("*",), resources=("*/status",))
    assert rule.allows(Request("patch", "apps", "deployments", "status", "ns", "d"))
    assert not rule.allows(Request("patch", "apps", "deployments", "", "ns", "d"))
    assert rbac.Rule(verbs=("get",), non_resource_urls=("/apis/*",)).allows(
        Request("get", non_resource_url="/apis/ovn-underlay.io/v1alpha1"))


def test_a_binding_to_a_missing_role_is_an_error() -> None:
    broken = [*MANIFESTS, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "dangling"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "missing"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]}]
    with pytest.raises(ValueError, match="dangling -> ClusterRole missing"):
        grants_for(broken, NS, SA)


def test_the_deploy_manifests_bind_roles_to_both_service_accounts() -> None:
    manifests = rbac.load_manifests()
    for name in ("ovn-underlay-agent", "ovn-underlay-controller"):
        own = [g for g in grants_for(manifests, NS, name)
               if g.source != "default roles of system:authenticated"]
        assert own, name


def test_unexercised_permissions_are_named() -> None:
    grants = grants_for(MANIFESTS, NS, SA)
    requests = rbac.requests_of(COVERED, USER)
    assert rbac.unexercised(requests, grants) == []
    fewer = [r for r in requests if r.verb != "watch"]
    left = [str(p) for p in rbac.unexercised(fewer, grants)]
    assert left == ["watch pods (core) from ClusterRoleBinding agent -> ClusterRole agent",
                    "watch namespaces (core) from ClusterRoleBinding agent -> ClusterRole agent"]
    no_update = [r for r in requests if r.verb != "update"]
    assert [str(p) for p in rbac.unexercised(no_update, grants)] == [
        "update leases the-lease (coordination.k8s.io) from RoleBinding lease -> Role lease"]
