"""Item 8: graceful Pod deletion, finalizers, namespace deletion, preconditions."""

from __future__ import annotations

import time

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, configmap, pod

PODS = "/api/v1/namespaces/default/pods"
CM = "/api/v1/namespaces/default/configmaps"


def test_bound_pod_is_deleted_gracefully(api: Http) -> None:
    """A Pod on a node is marked (deletionTimestamp, deletionGracePeriodSeconds) and stays
    until a DELETE with gracePeriodSeconds=0 — what the kubelet sends once its containers
    are gone (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
    #pod-termination).  An unbound Pod goes at once.  Watchers see MODIFIED, then DELETED.
    """
    api.create(PODS, pod("bound", nodeName="node1", terminationGracePeriodSeconds=20))
    api.create(PODS, pod("unbound"))
    watch = api.watch(f"{PODS}?watch=true&fieldSelector=metadata.name%3Dbound")
    assert watch.next()["type"] == "ADDED"
    status, marked = api.request("DELETE", f"{PODS}/bound")
    assert status == 200
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 20
    assert marked["metadata"]["deletionTimestamp"]
    assert api.get(f"{PODS}/bound")["metadata"]["deletionTimestamp"]
    assert watch.next()["type"] == "MODIFIED"
    status, _ = api.request("DELETE", f"{PODS}/bound", {"gracePeriodSeconds": 0})
    assert status == 200
    assert watch.next()["type"] == "DELETED"
    assert api.request("GET", f"{PODS}/bound")[0] == 404
    status, _ = api.request("DELETE", f"{PODS}/unbound")
    assert status == 200 and api.request("GET", f"{PODS}/unbound")[0] == 404
    watch.close()


def test_grace_period_from_the_request_and_its_expiry(api: Http) -> None:
    """The body's gracePeriodSeconds overrides the Pod's; when it runs out the Pod is
    removed (the emulator standing in for the kubelet; --no-grace-expiry turns that off)."""
    api.create(PODS, pod("short", nodeName="node1"))
    _, marked = api.request("DELETE", f"{PODS}/short", {"gracePeriodSeconds": 1})
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 1
    deadline = time.monotonic() + 5
    while api.request("GET", f"{PODS}/short")[0] != 404:
        assert time.monotonic() < deadline, "grace period never expired"
        time.sleep(0.1)


def test_no_grace_expiry_keeps_the_pod() -> None:
    """Without the kubelet stand-in the Pod waits for the final DELETE, as with a real
    kube-apiserver whose node is gone."""
    with KubeApiServer(expire_graceful_deletions=False) as strict:
        api = Http(strict)
        api.create(PODS, pod("kept", nodeName="node1"))
        api.request("DELETE", f"{PODS}/kept", {"gracePeriodSeconds": 1})
        time.sleep(1.5)
        assert api.get(f"{PODS}/kept")["metadata"]["deletionTimestamp"]


def test_finalizers_hold_the_object(api: Http) -> None:
    """An object with finalizers is only marked; it goes when the last finalizer is removed
    (https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/), and no
    finalizer can be added once it is being deleted."""
    api.create(CM, {"metadata": {"name": "held", "finalizers": ["lab.example.com/x"]}})
    status, marked = api.request("DELETE", f"{CM}/held")
    assert status == 200 and marked["metadata"]["deletionTimestamp"]
    assert api.get(f"{CM}/held")["metadata"]["finalizers"] == ["lab.example.com/x"]
    status, body = api.request("PATCH", f"{CM}/held", {"metadata": {
        "finalizers": ["lab.example.com/x", "lab.example.com/y"]}},
        "application/merge-patch+json")
    assert status == 422, body
    status, body = api.request("PATCH", f"{CM}/held", {"metadata": {"finalizers": None}},
                               "application/merge-patch+json")
    assert status == 200
    assert api.request("GET", f"{CM}/held")[0] == 404


def test_delete_preconditions(api: Http) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion) that do not match: 409."""
    made = api.create(CM, configmap("pre"))
    status, body = api.request("DELETE", f"{CM}/pre", {"preconditions": {"uid": "other"}})
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = api.request("DELETE", f"{CM}/pre", {"preconditions": {
        "resourceVersion": made["metadata"]["resourceVersion"]}})
    assert status == 200 and body["status"] == "Success"


def test_namespace_deletion_empties_it(api: Http) -> None:
    """Deleting a namespace makes it Terminating, refuses new content (403), deletes what
    it holds, then removes it (https://kubernetes.io/docs/tasks/administer-cluster/
    namespaces/#deleting-a-namespace); default cannot be deleted."""
    api.create("/api/v1/namespaces", {"metadata": {"name": "tmp"}})
    api.create("/api/v1/namespaces/tmp/configmaps", configmap("c"))
    api.create("/api/v1/namespaces/tmp/pods", pod("p", nodeName="node1"))
    status, body = api.request("DELETE", "/api/v1/namespaces/tmp")
    assert status == 200 and body["status"]["phase"] == "Terminating"
    status, body = api.request("POST", "/api/v1/namespaces/tmp/configmaps", configmap("d"))
    assert (status, body["reason"]) == (403, "Forbidden")
    assert api.request("GET", "/api/v1/namespaces/tmp/configmaps/c")[0] == 404
    api.request("DELETE", "/api/v1/namespaces/tmp/pods/p", {"gracePeriodSeconds": 0})
    assert api.request("GET", "/api/v1/namespaces/tmp")[0] == 404
    status, body = api.request("DELETE", "/api/v1/namespaces/default")
    assert status == 403
