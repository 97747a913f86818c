"""Item 1: the resources served, their paths, discovery, and errors as Status objects."""

from __future__ import annotations

from typing import Any

import pytest

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, configmap, pod

# (path prefix, plural, namespaced, a minimal valid body)
RESOURCES: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("/api/v1", "namespaces", False, {"metadata": {"name": "n1"}}),
    ("/api/v1", "nodes", False, {"metadata": {"name": "node1"}}),
    ("/api/v1", "pods", True, pod("x1")),
    ("/api/v1", "services", True, {"metadata": {"name": "x1"},
                                   "spec": {"ports": [{"port": 80}]}}),
    ("/api/v1", "endpoints", True, {"metadata": {"name": "x1"}, "subsets": []}),
    ("/api/v1", "configmaps", True, configmap("x1", a="b")),
    ("/api/v1", "secrets", True, {"metadata": {"name": "x1"}, "stringData": {"k": "v"}}),
    ("/api/v1", "serviceaccounts", True, {"metadata": {"name": "x1"}}),
    ("/api/v1", "events", True, {"metadata": {"name": "x1"}, "reason": "Test",
                                 "involvedObject": {"kind": "Pod", "name": "x1"}}),
    ("/apis/events.k8s.io/v1", "events", True, {
        "metadata": {"name": "x2"}, "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "test", "reportingInstance": "test-1", "action": "Tested",
        "reason": "Test", "type": "Normal", "note": "hello"}),
    ("/apis/discovery.k8s.io/v1", "endpointslices", True, {
        "metadata": {"name": "x1"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.1.1"]}]}),
    ("/apis/coordination.k8s.io/v1", "leases", True, {"metadata": {"name": "x1"},
                                                      "spec": {"holderIdentity": "me"}}),
    ("/apis/networking.k8s.io/v1", "networkpolicies", True, {"metadata": {"name": "x1"},
                                                             "spec": {"podSelector": {}}}),
]


@pytest.mark.parametrize(("prefix", "plural", "namespaced", "body"), RESOURCES,
                         ids=[f"{r[0]}/{r[1]}" for r in RESOURCES])
def test_crud_on_every_resource(api: Http, prefix: str, plural: str, namespaced: bool,
                                body: dict[str, Any]) -> None:
    """Create, get, list (own namespace and all namespaces), update, patch, delete.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#standard-api-terminology:
    namespaced types under ``namespaces/NS/``, cluster-scoped ones at the top, and
    ``GET /apis/GROUP/VERSION/RESOURCETYPE`` lists a namespaced type across all namespaces.
    A naive store keyed by name alone fails the two-namespaces part.
    """
    collection = f"{prefix}/namespaces/default/{plural}" if namespaced else f"{prefix}/{plural}"
    created = api.create(collection, body)
    name = created["metadata"]["name"]
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    if namespaced:
        assert created["metadata"]["namespace"] == "default"
        api.create(f"{prefix}/namespaces/kube-system/{plural}", body)
        everywhere = api.get(f"{prefix}/{plural}")
        assert {(i["metadata"]["namespace"], i["metadata"]["name"])
                for i in everywhere["items"]} >= {("default", name), ("kube-system", name)}
        assert len(api.get(collection)["items"]) == len(
            [i for i in everywhere["items"] if i["metadata"]["namespace"] == "default"])
    got = api.get(f"{collection}/{name}")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    got["metadata"].setdefault("annotations", {})["touched"] = "yes"
    status, updated = api.request("PUT", f"{collection}/{name}", got)
    assert status == 200, updated
    assert int(updated["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
    status, patched = api.request("PATCH", f"{collection}/{name}",
                                  {"metadata": {"labels": {"p": "1"}}},
                                  "application/merge-patch+json")
    assert status == 200 and patched["metadata"]["labels"]["p"] == "1", patched
    assert patched["metadata"]["annotations"]["touched"] == "yes"
    status, _ = api.request("DELETE", f"{collection}/{name}")
    assert status == 200
    if plural != "namespaces":
        status, gone = api.request("GET", f"{collection}/{name}")
        assert status == 404 and gone["reason"] == "NotFound"


def test_events_are_one_resource_in_two_apis(api: Http) -> None:
    """events.k8s.io/v1 Events are the core/v1 Events, renamed.

    https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/: the
    ``note``/``regarding``/``reportingController`` fields are core's ``message``/
    ``involvedObject``/``reportingComponent``; an emulator with two stores shows one only.
    """
    api.create("/apis/events.k8s.io/v1/namespaces/default/events", RESOURCES[9][3])
    core = api.get("/api/v1/namespaces/default/events/x2")
    assert core["message"] == "hello" and core["reportingComponent"] == "test"
    status, bad = api.request("POST", "/apis/events.k8s.io/v1/namespaces/default/events",
                              {"metadata": {"name": "x3"}, "reason": "R", "type": "Normal"})
    assert status == 422 and "eventTime: Required value" in bad["message"], bad


def test_errors_are_status_objects(api: Http) -> None:
    """NotFound 404, AlreadyExists 409, Invalid 422, BadRequest 400, MethodNotAllowed 405.

    https://kubernetes.io/docs/reference/using-api/api-concepts/ (errors are ``Status``
    objects, kind Status, with ``code`` and ``reason``) and the messages of
    k8s.io/apimachinery/pkg/api/errors that clients match on.
    """
    status, body = api.request("GET", "/api/v1/namespaces/default/configmaps/none")
    assert (status, body["kind"], body["reason"], body["code"]) == (404, "Status", "NotFound",
                                                                    404)
    assert body["message"] == 'configmaps "none" not found'
    assert body["details"] == {"name": "none", "kind": "configmaps"}
    api.create("/api/v1/namespaces/default/configmaps", configmap("c"))
    status, body = api.request("POST", "/api/v1/namespaces/default/configmaps", configmap("c"))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    status, body = api.request("POST", "/api/v1/namespaces/default/configmaps",
                               configmap("Bad_Name"))
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    status, body = api.request("POST", "/api/v1/namespaces/default/configmaps", b"{not json")
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = api.request("DELETE", "/api/v1/namespaces/default/configmaps")
    assert (status, body["reason"]) == (405, "MethodNotAllowed")
    status, body = api.request("POST", "/api/v1/namespaces/nowhere/configmaps", configmap("c"))
    assert (status, body["reason"], body["message"]) == (404, "NotFound",
                                                          'namespaces "nowhere" not found')
    status, body = api.request("GET", "/apis/coordination.k8s.io/v1/namespaces/default/"
                                      "leases/none")
    assert body["message"] == 'leases.coordination.k8s.io "none" not found'
    status, body = api.request("POST", "/api/v1/namespaces/default/configmaps",
                               {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    assert status == 400, body


def test_discovery_documents(api: Http) -> None:
    """/api, /api/v1, /apis, /apis/G, /apis/G/V and /version as clients read them.

    https://kubernetes.io/docs/reference/using-api/#api-groups (legacy core group at /api,
    named groups at /apis) and the APIResourceList that maps plural, kind, namespaced,
    verbs and short names (what ``kubectl get po`` resolves through).
    """
    assert api.get("/api")["versions"] == ["v1"]
    core = {r["name"]: r for r in api.get("/api/v1")["resources"]}
    assert core["pods"]["kind"] == "Pod" and core["pods"]["namespaced"] is True
    assert "po" in core["pods"]["shortNames"] and "watch" in core["pods"]["verbs"]
    assert "pods/status" in core and "nodes/status" in core and "services/status" in core
    assert core["nodes"]["namespaced"] is False
    groups = {g["name"]: g for g in api.get("/apis")["groups"]}
    assert set(groups) >= {"events.k8s.io", "discovery.k8s.io", "coordination.k8s.io",
                           "networking.k8s.io", "apiextensions.k8s.io"}
    assert api.get("/apis/coordination.k8s.io")["preferredVersion"]["version"] == "v1"
    leases = api.get("/apis/coordination.k8s.io/v1")["resources"]
    assert leases[0]["name"] == "leases" and leases[0]["kind"] == "Lease"
    assert api.get("/version")["major"] == "1"
    status, _ = api.request("GET", "/apis/example.com/v1")
    assert status == 404


def crd(plural: str, kind: str, scope: str, status: bool = True) -> dict[str, Any]:
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}
    if status:
        version["subresources"] = {"status": {}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.lab.example.com"},
            "spec": {"group": "lab.example.com", "scope": scope, "versions": [version],
                     "names": {"plural": plural, "singular": plural[:-1], "kind": kind}}}


def test_custom_resource_definitions_serve_their_types(api: Http, kube: Any) -> None:
    """A CRD serves group/version/plural, namespaced or cluster-scoped, with /status.

    https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
    custom-resource-definitions/: "a new namespaced RESTful API endpoint is created at
    /apis/<group>/<version>/namespaces/*/<plural>"; the status subresource makes the main
    resource ignore ``.status``; deleting the CRD deletes its objects.  Lightkube's generic
    resources reach the same paths.
    """
    from lightkube.generic_resource import create_global_resource, create_namespaced_resource

    api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
               crd("widgets", "Widget", "Namespaced"))
    api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
               crd("zones", "Zone", "Cluster", status=False))
    established = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                          "widgets.lab.example.com")
    assert {c["type"]: c["status"] for c in established["status"]["conditions"]}[
        "Established"] == "True"
    resources = {r["name"] for r in api.get("/apis/lab.example.com/v1")["resources"]}
    assert resources == {"widgets", "widgets/status", "zones"}
    widget = api.create("/apis/lab.example.com/v1/namespaces/default/widgets", {
        "apiVersion": "lab.example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 1}, "status": {"ready": True}})
    assert "status" not in widget
    widget["status"] = {"ready": True}
    status, body = api.request("PUT", "/apis/lab.example.com/v1/namespaces/default/widgets/w",
                               widget)
    assert status == 200 and "status" not in body, body
    status, body = api.request("PUT",
                               "/apis/lab.example.com/v1/namespaces/default/widgets/w/status",
                               body | {"status": {"ready": True}})
    assert status == 200 and body["status"] == {"ready": True}, body
    zone = api.create("/apis/lab.example.com/v1/zones", {
        "apiVersion": "lab.example.com/v1", "kind": "Zone", "metadata": {"name": "z"},
        "status": {"kept": True}})
    assert zone["status"] == {"kept": True} and "namespace" not in zone["metadata"]

    widget_type = create_namespaced_resource("lab.example.com", "v1", "Widget", "widgets")
    zone_type = create_global_resource("lab.example.com", "v1", "Zone", "zones")
    assert [w.metadata.name for w in kube.list(widget_type, namespace="default")] == ["w"]
    assert kube.get(zone_type, "z").metadata.name == "z"
    listed = api.get("/apis/lab.example.com/v1/widgets")
    assert listed["items"][0]["kind"] == "Widget"  # custom resource list items keep kind

    status, _ = api.request("DELETE", "/apis/apiextensions.k8s.io/v1/"
                                      "customresourcedefinitions/widgets.lab.example.com")
    assert status == 200
    status, body = api.request("GET", "/apis/lab.example.com/v1/namespaces/default/widgets/w")
    assert status == 404
    status, body = api.request("POST", "/apis/apiextensions.k8s.io/v1/"
                                       "customresourcedefinitions",
                               crd("things", "Thing", "Cluster") | {
                                   "metadata": {"name": "wrong.lab.example.com"}})
    assert status == 422 and body["details"]["causes"][0]["field"] == "metadata.name"


def test_builtin_list_items_have_no_kind(server: KubeApiServer, api: Http) -> None:
    """Built-in list items carry no kind/apiVersion, as the real server encodes them.

    A client that reads ``items[i].kind`` works on a naive emulator and breaks on a real
    cluster; the emulator makes it break here too.
    """
    api.create("/api/v1/namespaces/default/configmaps", configmap("a"))
    listed = api.get("/api/v1/namespaces/default/configmaps")
    assert listed["kind"] == "ConfigMapList" and listed["apiVersion"] == "v1"
    assert "kind" not in listed["items"][0]
