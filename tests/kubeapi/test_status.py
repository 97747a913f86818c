"""Item 7: the status subresource."""

from __future__ import annotations

from typing import Any

from .conftest import Http, pod

PODS = "/api/v1/namespaces/default/pods"
MERGE = "application/merge-patch+json"


def test_status_writes_change_only_status(api: Http) -> None:
    """Writes to ``/status`` change only ``.status``; writes to the main resource ignore
    ``.status`` (pods, nodes, services): https://kubernetes.io/docs/concepts/overview/
    working-with-objects/#object-spec-and-status and the registry's status strategies.
    A naive emulator lets a kubelet's status write undo a user's label change."""
    made = api.create(PODS, pod("s", {"a": "1"}))
    assert made["status"]["phase"] == "Pending"
    status, body = api.request("PATCH", f"{PODS}/s/status", {
        "metadata": {"labels": {"sneaky": "1"}}, "spec": {"nodeName": "n"},
        "status": {"phase": "Running", "podIP": "10.0.0.9"}}, MERGE)
    assert status == 200, body
    assert body["status"]["phase"] == "Running" and body["status"]["podIP"] == "10.0.0.9"
    assert body["metadata"]["labels"] == {"a": "1"} and "nodeName" not in body["spec"]
    body["status"]["phase"] = "Failed"
    body["metadata"]["labels"]["b"] = "2"
    status, updated = api.request("PUT", f"{PODS}/s", body)
    assert status == 200, updated
    assert updated["status"]["phase"] == "Running" and updated["metadata"]["labels"]["b"] == "2"
    status, got = api.request("GET", f"{PODS}/s/status")
    assert got["status"]["phase"] == "Running"


def test_status_on_nodes_and_services(api: Http) -> None:
    """Nodes may be created with status (kubelet registration); later main-resource
    writes keep it. Services' status is reset on create (pkg/registry/core/*/strategy.go)."""
    node = api.create("/api/v1/nodes", {"metadata": {"name": "n1"}, "status": {
        "conditions": [{"type": "Ready", "status": "True"}]}})
    assert node["status"]["conditions"][0]["status"] == "True"
    status, body = api.request("PATCH", "/api/v1/nodes/n1", {"status": {"conditions": []}},
                               MERGE)
    assert body["status"]["conditions"][0]["status"] == "True"
    status, body = api.request("PATCH", "/api/v1/nodes/n1/status", {
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        "application/strategic-merge-patch+json")
    assert body["status"]["conditions"] == [{"type": "Ready", "status": "False"}]
    service = api.create("/api/v1/namespaces/default/services", {
        "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    assert service["status"] == {"loadBalancer": {}}
    status, body = api.request("PUT", "/api/v1/namespaces/default/services/lb/status",
                               service | {"status": {"loadBalancer": {"ingress": [
                                   {"ip": "1.2.3.4"}]}}})
    assert status == 200 and body["status"]["loadBalancer"]["ingress"] == [{"ip": "1.2.3.4"}]
    status, _ = api.request("GET", "/api/v1/namespaces/default/configmaps/x/status")
    assert status == 404  # no such subresource


def test_lightkube_status_subresource(kube: Any, api: Http) -> None:
    """lightkube's Pod.Status resource and replace() on it go to /status."""
    from lightkube.resources.core_v1 import Pod

    api.create(PODS, pod("l"))
    kube.patch(Pod.Status, "l", {"status": {"phase": "Running"}})
    assert kube.get(Pod, "l").status.phase == "Running"
    current = kube.get(Pod, "l")
    current.status.phase = "Succeeded"
    current.spec.activeDeadlineSeconds = 5
    replaced = kube.replace(current)
    assert replaced.status.phase == "Running" and replaced.spec.activeDeadlineSeconds == 5
