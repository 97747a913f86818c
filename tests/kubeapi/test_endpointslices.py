"""Item 11: the stand-in EndpointSlice controller.

https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/ (conditions,
management labels, ownership) and kube-controller-manager's endpointslice controller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, pod

PODS = "/api/v1/namespaces/default/pods"
SVC = "/api/v1/namespaces/default/services"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
MERGE = "application/merge-patch+json"


def slices_of(api: Http, service: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        f"{SLICES}?labelSelector=kubernetes.io/service-name%3D{service}")["items"]
    return items


def eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.02)


def running(api: Http, name: str, ip: str, ready: bool = True, **spec: Any) -> None:
    labels = spec.pop("labels", {"app": "web"})
    api.create(PODS, pod(name, labels, nodeName="node1", **spec))
    api.request("PATCH", f"{PODS}/{name}/status", {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}, MERGE)


def endpoints(api: Http, service: str) -> dict[str, dict[str, Any]]:
    return {e["targetRef"]["name"]: e for s in slices_of(api, service) for e in s["endpoints"]}


def test_slices_follow_pods_and_services(api: Http) -> None:
    """A selected, addressed Pod becomes an endpoint with ready/serving/terminating,
    nodeName and targetRef; labels, managed-by and ownerReference as the real controller;
    a selectorless Service is left alone; the slices go with the Service.  The change shows
    within 100 ms."""
    service = api.create(SVC, {"metadata": {"name": "web", "labels": {"team": "a"}},
                               "spec": {"selector": {"app": "web"},
                                        "ports": [{"name": "http", "port": 80}]}})
    running(api, "a", "10.0.0.1")
    started = time.monotonic()
    eventually(lambda: "a" in endpoints(api, "web"))
    assert time.monotonic() - started < 0.5
    running(api, "b", "10.0.0.2", ready=False)
    running(api, "other", "10.0.0.3", labels={"app": "db"})
    api.create(PODS, pod("noip", {"app": "web"}))
    found = eventually(lambda: endpoints(api, "web") if len(endpoints(api, "web")) == 2
                       else None)
    assert found["a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert found["b"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert found["a"]["nodeName"] == "node1" and found["a"]["addresses"] == ["10.0.0.1"]
    assert found["a"]["targetRef"]["kind"] == "Pod"
    slice_ = slices_of(api, "web")[0]
    assert slice_["addressType"] == "IPv4"
    assert slice_["metadata"]["labels"] == {
        "team": "a", "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert slice_["metadata"]["ownerReferences"][0]["uid"] == service["metadata"]["uid"]
    assert slice_["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]

    api.request("DELETE", f"{PODS}/a")  # bound: graceful, terminating
    terminating = eventually(lambda: endpoints(api, "web")["a"]["conditions"]["terminating"]
                             and endpoints(api, "web")["a"])
    assert terminating["conditions"] == {"ready": False, "serving": True, "terminating": True}

    api.create(SVC, {"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}})
    api.create(SLICES, {"metadata": {"name": "manual-1", "labels": {
        "kubernetes.io/service-name": "manual"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.1"]}]})
    api.request("DELETE", f"{SVC}/web")
    eventually(lambda: slices_of(api, "web") == [])
    time.sleep(0.1)
    assert [s["metadata"]["name"] for s in slices_of(api, "manual")] == ["manual-1"]


def test_named_target_port_resolves_per_pod(api: Http) -> None:
    """A named targetPort is looked up in each Pod's containers; Pods resolving to
    different numbers go to different slices (the real controller's grouping by ports)."""
    api.create(SVC, {"metadata": {"name": "named"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})
    for name, number, ip in (("p8080", 8080, "10.0.1.1"), ("p9090", 9090, "10.0.1.2")):
        running(api, name, ip, containers=[{"name": "c", "image": "img", "ports": [
            {"name": "http", "containerPort": number}]}])
    slices = eventually(lambda: slices_of(api, "named") if len(
        slices_of(api, "named")) == 2 else None)
    by_port = {s["ports"][0]["port"]: [e["targetRef"]["name"] for e in s["endpoints"]]
               for s in slices}
    assert by_port == {8080: ["p8080"], 9090: ["p9090"]}
    assert all(s["ports"][0]["name"] == "web" for s in slices)


def test_publish_not_ready_and_empty_services(api: Http) -> None:
    """publishNotReadyAddresses makes every endpoint ready; a selected Service with no
    Pods has one empty slice; a terminal Pod with restartPolicy Never is dropped."""
    api.create(SVC, {"metadata": {"name": "all"}, "spec": {
        "selector": {"app": "web"}, "publishNotReadyAddresses": True, "ports": [{"port": 80}]}})
    api.create(SVC, {"metadata": {"name": "none"}, "spec": {
        "selector": {"app": "nothing"}, "ports": [{"port": 80}]}})
    running(api, "slow", "10.0.2.1", ready=False)
    eventually(lambda: endpoints(api, "all").get("slow", {}).get("conditions", {}).get("ready"))
    empty = eventually(lambda: slices_of(api, "none"))
    assert empty[0]["endpoints"] == []
    running(api, "done", "10.0.2.2", restartPolicy="Never")
    eventually(lambda: "done" in endpoints(api, "all"))
    api.request("PATCH", f"{PODS}/done/status", {"status": {"phase": "Succeeded"}}, MERGE)
    eventually(lambda: "done" not in endpoints(api, "all"))


def test_controller_can_be_turned_off() -> None:
    with KubeApiServer(endpointslice_controller=False) as bare:
        api = Http(bare)
        api.create(SVC, {"metadata": {"name": "s"}, "spec": {"selector": {"app": "web"},
                                                             "ports": [{"port": 80}]}})
        time.sleep(0.1)
        assert slices_of(api, "s") == []
